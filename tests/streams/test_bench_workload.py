"""``tide bench``'s synthetic workload (streams/bench/workload.py): the default mix as measured so far,
Zipf and uniform popularity, bursty users, new items that debut in order; no broker."""

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from streams.bench import BenchOptions
from streams.bench.workload import NEW_ITEM_EVENTS, SESSION_EVENTS, workload, zipf_ranks

SMALL = BenchOptions(events=20_000, users=2_000, items=500)


def _n_distinct_per_batch(users: list[str], batch: int = 1_000) -> float:
    return float(np.mean([len(set(users[k : k + batch])) for k in range(0, len(users), batch)]))


def test_the_default_workloads_are_the_ones_measured_so_far():
    users, items, catalogue = workload(BenchOptions())
    assert (len(users), len(items)) == (60_000, 60_000) and catalogue == [f"i{k}" for k in range(1_000)]
    assert users[:6] == ["u28", "u0", "u280", "u659", "u77", "u756"]
    assert items[:6] == ["i98", "i6", "i326", "i627", "i999", "i770"]
    users, items, _ = workload(BenchOptions(active_users=5_000))
    assert users[:3] == ["u4253", "u3184", "u2555"] and items[:3] == ["i932", "i540", "i705"]


@pytest.mark.parametrize(
    "opts",
    [
        SMALL,
        replace(SMALL, popularity="zipf", user_pattern="bursty", new_items=0.1),
        replace(SMALL, active_users=3_000, popularity="uniform", new_items=0.02),
    ],
)
def test_the_same_seed_gives_the_same_events_and_another_seed_others(opts):
    assert workload(opts) == workload(replace(opts))
    assert workload(opts)[:2] != workload(replace(opts, seed=1))[:2]


def test_ids_stay_within_the_population_and_the_catalogue():
    for opts in (
        replace(SMALL, popularity="zipf", zipf=0.8),
        replace(SMALL, popularity="uniform", user_pattern="bursty"),
        replace(SMALL, active_users=300, popularity="zipf"),
    ):
        users, items, catalogue = workload(opts)
        population = opts.active_users or opts.users
        assert {int(u[1:]) for u in users} <= set(range(population))
        assert set(items) <= set(catalogue) and len(catalogue) == opts.items


def test_zipf_ranks_follow_the_bounded_law():
    rng = np.random.default_rng(0)
    n, s, size = 50, 1.1, 200_000
    counts = np.bincount(zipf_ranks(rng, s, n, size), minlength=n)
    p = np.arange(1, n + 1, dtype=np.float64) ** -s
    p /= p.sum()
    assert len(counts) == n  # nothing past the last rank
    np.testing.assert_allclose(counts / size, p, atol=0.004)
    assert counts[-1] / size < 2 * p[-1]  # no mass piled up on the last rank


def test_zipf_popularity_is_skewed_and_uniform_is_flat():
    zipf = replace(SMALL, popularity="zipf", zipf=1.1)
    users, items, _ = workload(zipf)
    top_user, top_item = Counter(users).most_common(1)[0], Counter(items).most_common(1)[0]
    h_users = float(np.sum(np.arange(1, 2_001) ** -1.1))
    h_items = float(np.sum(np.arange(1, 501) ** -1.1))
    assert top_user[0] == "u0" and top_user[1] / 20_000 == pytest.approx(1 / h_users, rel=0.1)
    assert top_item[0] == "i0" and top_item[1] / 20_000 == pytest.approx(1 / h_items, rel=0.1)
    flat = Counter(workload(replace(SMALL, popularity="uniform"))[1])
    assert len(flat) == 500 and max(flat.values()) < 3 * 20_000 / 500
    # a larger exponent concentrates more
    steep = Counter(workload(replace(zipf, zipf=1.5))[1])
    assert steep["i0"] > 1.5 * Counter(items)["i0"]


def test_active_users_draw_from_their_population_with_either_popularity():
    big = replace(SMALL, active_users=100_000, items=100_000)
    for popularity in ("zipf", "uniform"):
        users, items, _ = workload(replace(big, popularity=popularity))
        assert max(int(u[1:]) for u in users) > 50_000 and max(int(i[1:]) for i in items) > 50_000
    uniform_users = Counter(workload(replace(big, popularity="uniform"))[0])
    zipf_users = Counter(workload(replace(big, popularity="zipf"))[0])
    assert len(uniform_users) > 1.5 * len(zipf_users)


def test_bursty_users_come_in_sessions_and_keep_their_share():
    base = replace(SMALL, active_users=100_000, popularity="uniform")
    uniform, _, _ = workload(base)
    bursty, _, _ = workload(replace(base, user_pattern="bursty"))
    assert _n_distinct_per_batch(uniform) > 0.98 * 1_000
    # about one user per SESSION_EVENTS events in a batch, a little more for the sessions cut at its ends
    assert 1_000 / SESSION_EVENTS < _n_distinct_per_batch(bursty) < 2 * 1_000 / SESSION_EVENTS
    # consecutive-ish: a user's next event is near, though not always the very next one
    gaps = [b - a for u, pos in _positions(bursty).items() for a, b in zip(pos, pos[1:])]
    assert np.median(gaps) <= 2 * 3 and np.mean(np.array(gaps) == 1) < 0.9
    # sessions keep the popularity: under Zipf the top users are the same with both patterns
    zipf = replace(SMALL, popularity="zipf")
    top = {u for u, _ in Counter(workload(zipf)[0]).most_common(3)}
    assert top == {u for u, _ in Counter(workload(replace(zipf, user_pattern="bursty"))[0]).most_common(3)}


def _positions(users: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for k, u in enumerate(users):
        out.setdefault(u, []).append(k)
    return out


@pytest.mark.parametrize(
    "opts",
    [replace(SMALL, new_items=0.05), replace(SMALL, active_users=5_000, popularity="zipf", new_items=0.2)],
)
def test_new_items_take_their_share_and_debut_in_order_over_the_run(opts):
    users, items, catalogue = workload(opts)
    known = set(catalogue)
    new = [(k, i) for k, i in enumerate(items) if i not in known]
    assert len(new) == round(opts.new_items * opts.events)
    assert all(i.startswith("n") for _, i in new)
    first: dict[str, int] = {}
    for k, i in new:
        first.setdefault(i, k)
    ids = [int(i[1:]) for i in first]  # in order of debut
    assert ids == list(range(len(ids)))  # n0, n1, … in turn
    assert len(ids) == len(new) // NEW_ITEM_EVENTS
    # progressively: debuts spread over the whole run, not bunched at its start
    debuts = np.array(list(first.values())) / opts.events
    assert debuts[0] < 0.05 and debuts[-1] > 0.9
    assert np.histogram(debuts, bins=4, range=(0, 1))[0].min() > 0.15 * len(ids)
    # each new item has follow-ups, mostly soon after its debut
    counts = Counter(i for _, i in new)
    assert np.mean([c > 1 for c in counts.values()]) > 0.5
    # the rest of the events are the workload without new items, event for event
    plain_items = workload(replace(opts, new_items=0.0))[1]
    assert [a for a, b in zip(items, plain_items) if a != b] == [i for _, i in new]


def test_no_new_items_by_default_and_bad_options_are_refused():
    _, items, catalogue = workload(SMALL)
    assert set(items) <= set(catalogue)
    for bad in ({"new_items": 1.0}, {"new_items": -0.1}, {"zipf": 0.0}, {"popularity": "pareto"},
                {"user_pattern": "weekly"}):
        with pytest.raises(ValueError):
            workload(replace(SMALL, **bad))
