"""The demo's scoring: the model, recency-frequency and the offline evaluator are cut at the same k."""

import math

import pytest

from streams.demo import _accuracy, _at_k, _print_accuracy

# rows:      0    1    2    3    4
USERS = ["u", "u", "u", "v", "v"]
ITEMS = ["a", "b", "a", "c", "a"]
# next true item: row 0 → b (row 1, in training), row 1 → a (row 2), row 3 → a (row 4); rows 2, 4: none


def test_at_k_counts_ranks_beyond_k_as_zero() -> None:
    m = _at_k([1, 2, 3, math.inf], k=2)
    assert m == {"n": 4, "recall": 0.5, "mrr": pytest.approx((1 + 0.5) / 4)}


def test_accuracy_scores_the_same_rows_with_the_same_cut() -> None:
    lists = {0: ["b", "a"], 1: ["a", "b"], 2: ["a"], 3: ["c", "b"], 4: ["a"]}
    offline = {2: 3.0, 4: 2.0}  # the evaluator's ranks of rows 2 and 4 (the next events of rows 1 and 3)
    acc = _accuracy(USERS, ITEMS, n_train=2, lists=lists, offline=offline, k=2)
    # only rows 1 and 3 count: row 0's next event is in training, rows 2 and 4 have none
    assert {name: m["n"] for name, m in acc.items()} == {"model": 2, "recency_frequency": 2, "offline": 2}
    # row 1: "a" first in its list; row 3: "a" not in it
    assert acc["model"] == {"n": 2, "recall": 0.5, "mrr": 0.5}
    # row 1: u has a (older) and b (newer), so a ranks 2; row 3: v has only c, a ties 1 other: rank 2.5 > 2
    assert acc["recency_frequency"] == {"n": 2, "recall": 0.5, "mrr": 0.25}
    # rank 3 is beyond k = 2 and counts 0; rank 2 counts 1/2
    assert acc["offline"] == {"n": 2, "recall": 0.5, "mrr": 0.25}


def test_labels_name_the_cut(capsys: pytest.CaptureFixture[str]) -> None:
    m = {"n": 2, "recall": 0.5, "mrr": 0.25}
    _print_accuracy({"model": m, "recency_frequency": m, "offline": m}, k=10)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all("Recall@10 0.500   MRR@10 0.250" in line for line in lines)
    assert "(Kafka − offline: +0.000, +0.000)" in lines[2]
