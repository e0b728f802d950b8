"""The offline evaluator's simple baselines: exact ranks on tiny hand-made streams."""

import math
import random

import pytest

from engine.offline.baselines import (
    DecayedPopularity,
    LastItemTransitions,
    Popularity,
    PopularityTieBreak,
    RecencyFrequency,
    default_baselines,
    strongest,
)


def feed(baseline, events):
    for user, item in events:
        baseline.observe(user, item)
    return baseline


def test_decayed_popularity_prefers_recent_use():
    pop = feed(DecayedPopularity(0.5), [("u", "a"), ("v", "a"), ("u", "b"), ("w", "b")])
    # a = 0.5^3 + 0.5^2 = 0.375, b = 0.5 + 1 = 1.5: same count, b used more recently
    assert pop.score("a") == 0.375 and pop.score("b") == 1.5 and pop.score("z") == 0
    assert pop.rank("u", "b", 5) == 1
    assert pop.rank("u", "a", 5) == 2
    assert pop.rank("u", "z", 5) == 3 + 0.5 * 2  # three unseen items tie at 0
    # Plain popularity cannot tell them apart.
    plain = feed(Popularity(), [("u", "a"), ("v", "a"), ("u", "b"), ("w", "b")])
    assert plain.rank("u", "a", 5) == plain.rank("u", "b", 5) == 1.5

    default = feed(DecayedPopularity(), [("u", "a"), ("u", "b")])  # decay 0.999
    assert default.score("a") == pytest.approx(0.999) and default.score("b") == 1.0
    assert [default.rank("u", i, 3) for i in "bac"] == [1, 2, 3]


def test_decayed_popularity_survives_rescaling():
    decay, items = 0.9, ["a", "b", "c", "d"]
    pop = DecayedPopularity(decay)  # stored scale passes 1e100 after ~2,185 events, so it rescales
    rng = random.Random(0)
    stream = [rng.choice(items) for _ in range(5000)]
    for item in stream:
        pop.observe("u", item)
    for item in items:
        exact = sum(decay ** (len(stream) - 1 - k) for k, i in enumerate(stream) if i == item)
        assert pop.score(item) == pytest.approx(exact, rel=1e-9)
    assert pop.rank("u", stream[-1], 4) == 1


def test_tie_break_keeps_primary_order_and_orders_unscored_by_popularity():
    events = [("u", "a"), ("v", "c"), ("v", "c"), ("v", "d"), ("u", "b")]
    rf = feed(PopularityTieBreak(RecencyFrequency(0.5), decay=0.5), events)
    # primary (u's recency-frequency): b = 1, a = 0.5, the rest 0;
    # popularity: b = 1, d = 0.5, c = 0.25 + 0.125 = 0.375, a = 0.0625, e = f = 0
    assert [rf.rank("u", i, 6) for i in "badc"] == [1, 2, 3, 4]  # a stays above the more popular c, d
    assert rf.rank("u", "e", 6) == rf.rank("u", "f", 6) == 5.5
    plain = feed(RecencyFrequency(0.5), events)
    assert plain.rank("u", "b", 6) == 1 and plain.rank("u", "a", 6) == 2 and plain.rank("u", "c", 6) == 4.5
    # a user with no history: popularity alone
    assert [rf.rank("new", i, 6) for i in "bdca"] == [1, 2, 3, 4]


def test_tie_break_splits_equal_primary_scores():
    events = [("x", "p"), ("x", "q"), ("y", "p"), ("y", "r"), ("z", "r"), ("w", "p")]
    tr = feed(PopularityTieBreak(LastItemTransitions(), decay=0.5), events)
    # w's last item p: p → q once, p → r once; popularity r = 0.75 > q = 0.0625, p = 1.15625
    assert [tr.rank("w", i, 4) for i in "rqps"] == [1, 2, 3, 4]
    plain = feed(LastItemTransitions(), events)
    assert [plain.rank("w", i, 4) for i in "rqps"] == [1.5, 1.5, 3.5, 3.5]
    # Undecayed counts: q and r have one use each, so they stay tied (half each).
    counts = feed(PopularityTieBreak(LastItemTransitions(), decay=1.0), events[:4] + [("w", "p")])
    assert [counts.rank("w", i, 4) for i in "rqps"] == [1.5, 1.5, 3, 4]


def test_tie_break_matches_a_brute_force_lexicographic_rank():
    rng = random.Random(3)
    items = [f"i{k}" for k in range(12)]
    n_items = len(items) + 3  # three items never seen
    for primary in (RecencyFrequency(0.5), LastItemTransitions()):
        tb = PopularityTieBreak(primary, decay=0.5)
        for _ in range(250):
            user, item = f"u{rng.randrange(4)}", items[min(rng.randrange(12), rng.randrange(12))]
            tb.observe(user, item)
            scored = primary.scores(user)
            keys = {i: (scored.get(i, 0.0), tb.popularity.score(i)) for i in items}
            keys.update({f"unseen{k}": (0.0, 0.0) for k in range(3)})
            for target, key in keys.items():
                above = sum(1 for k in keys.values() if k > key)
                ties = sum(1 for k in keys.values() if k == key) - 1
                assert tb.rank(user, target, n_items) == 1 + above + 0.5 * ties


def test_existing_baselines_rank_as_before():
    rf = feed(RecencyFrequency(0.5), [("u", i) for i in ["a", "b", "a", "c"]])
    # scores: c=1, a=0.5+0.125=0.625, b=0.25; 10 items in all, 7 unseen tied at 0
    assert [rf.rank("u", i, 10) for i in "cabz"] == [1, 2, 3, 4 + 0.5 * 6]
    assert rf.rank("other", "a", 10) == 5.5
    # An item used long ago keeps a tiny score until the rescale after the 200th event drops it.
    old = feed(RecencyFrequency(0.5), [("u", "old")] + [("u", "xy"[k % 2]) for k in range(99)])
    assert old.rank("u", "old", 5) == 3
    feed(old, [("u", "xy"[k % 2]) for k in range(150)])
    assert old.rank("u", "old", 5) == 3 + 0.5 * 2

    tr = feed(LastItemTransitions(), [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("b", "x"), ("c", "x")])
    # x → y twice, y → x once; user c's last item is x
    assert tr.rank("c", "y", 5) == 1 and tr.rank("c", "x", 5) == 2 + 0.5 * 3
    assert tr.rank("a", "x", 5) == 1 and tr.rank("nobody", "x", 5) == 3

    pop = feed(Popularity(), [("u", "a"), ("u", "a"), ("u", "b")])
    assert pop.rank("u", "a", 5) == 1 and pop.rank("u", "b", 5) == 2 and pop.rank("u", "z", 5) == 3 + 0.5 * 2
    assert pop.counts == {"a": 2, "b": 1}


def test_default_baselines_and_strongest():
    assert list(default_baselines()) == [
        "recency_frequency",
        "recency_frequency_pop",
        "last_item_transitions",
        "last_item_transitions_pop",
        "popularity",
        "decayed_popularity",
    ]
    metrics = {"popularity": {"mrr": 0.03}, "recency_frequency_pop": {"mrr": 0.8}, "x": {"mrr": math.nan}}
    assert strongest(metrics) == "recency_frequency_pop"
    with pytest.raises(ValueError):
        strongest({})
