"""User contexts: the batched builder against a one-user oracle, and training's contexts against the
stream's."""

import numpy as np
import torch

from engine.fold.context import EMIT_GAPS, apply_event, emission_times, log_contexts, user_contexts
from engine.fold.profile import N_PROFILE_FEATURES, profile_features
from engine.state.codec import UserState


def _states(n: int, seed: int = 0) -> list[UserState]:
    rng = np.random.default_rng(seed)
    out = []
    for u in range(n):
        st = UserState.empty(4)
        t = 1000.0 * u
        # some users have no events, some more than the profile holds
        for _ in range(int(rng.integers(0, 30))):
            t += float(rng.exponential(50))
            apply_event(st, f"i{rng.integers(0, 12)}", t, int(rng.integers(0, 3)), max_items=6)
        out.append(st)
    return out


def _one_user(st: UserState, rows_of, max_items: int, hist_len: int, now: float) -> dict[str, np.ndarray]:
    """The context of one user, written out field by field: the oracle the batched code must match."""
    out = {
        "prof_rows": np.full(max_items, -1), "prof_feats": np.zeros((max_items, N_PROFILE_FEATURES)),
        "hist_rows": np.full(hist_len, -1),
        "hist_ages": np.zeros(hist_len), "hist_types": np.zeros(hist_len), "gap": np.zeros(()),
    }
    m = min(len(st.prof_items), max_items)
    if m:
        out["prof_rows"][:m] = rows_of(st.prof_items[:m])
        out["prof_feats"][:m] = profile_features(st, now)[:m]
    h = min(len(st.hist_items), hist_len)
    if h:
        out["hist_rows"][:h] = rows_of(st.hist_items[:h])
        out["hist_ages"][:h] = np.maximum(now - np.asarray(st.hist_times[:h]), 0.0)
        out["hist_types"][:h] = st.hist_types[:h]
        out["gap"] = np.array(max(now - st.hist_times[0], 0.0))
    return out


def test_batched_contexts_equal_one_user_at_a_time():
    index = {f"i{k}": k for k in range(12)}

    def rows_of(ids):
        return np.array([index[i] for i in ids], np.int64)

    states = _states(40)
    for now in (None, np.array([1000.0 * u + 700 for u in range(40)])):
        batched = user_contexts(states, rows_of, max_items=4, hist_len=5, now=now)
        for b, st in enumerate(states):
            t = (st.hist_times[0] if st.hist_times else 0.0) if now is None else float(now[b])
            one = _one_user(st, rows_of, 4, 5, t)
            for name, want in one.items():
                got = getattr(batched, name)[b].double().numpy()
                assert np.allclose(got, want, atol=1e-6), name


def test_log_contexts_are_the_streams_contexts_just_before_each_event():
    rng = np.random.default_rng(1)
    users, items = rng.integers(0, 5, 200), rng.integers(0, 9, 200)
    ts, types = np.cumsum(rng.exponential(10.0, 200)), rng.integers(0, 3, 200)
    logged = log_contexts(users, items, ts, types, max_items=4, hist_len=5, chunk=16)
    states = {u: UserState.empty(0) for u in range(5)}
    for e in range(200):
        st = states[int(users[e])]
        one = user_contexts([st], np.asarray, 4, 5, now=[ts[e]])
        for name, a in vars(one).items():
            assert torch.equal(getattr(logged, name)[e], a[0]), (name, e)
        apply_event(st, int(items[e]), float(ts[e]), int(types[e]), 4)


def test_a_pushed_list_is_for_the_users_quickest_recent_return():
    a, one, none = UserState.empty(4), UserState.empty(4), UserState.empty(4)
    a.hist_times = [100.0, 90.0, 40.0, 39.0]  # most recent first; the gap of 1 s is the 3rd of 3
    one.hist_times = [5.0]
    assert emission_times([a, one, none]).tolist() == [101.0, 5.0, 0.0]
    a.hist_times = [100.0] + [90.0 - 10 * k for k in range(EMIT_GAPS)] + [19.0]  # its 1 s gap is too old
    assert emission_times([a])[0] == 110.0
