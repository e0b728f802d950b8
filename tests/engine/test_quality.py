"""The live-quality definitions (engine/quality.py), with exact values on tiny inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.quality import LiveQuality, exposure_gini, intra_list_distance, reciprocal_rank


def test_reciprocal_rank_is_one_over_the_position_within_k():
    top = ["a", "b", "c", "d"]
    assert [reciprocal_rank(i, top, 3) for i in ("a", "b", "c", "d", "z")] == [1.0, 0.5, 1 / 3, 0.0, 0.0]


def test_intra_list_distance_is_the_mean_pairwise_cosine_distance():
    same = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]])
    orthogonal = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    mixed = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    assert intra_list_distance(same).tolist() == pytest.approx([0.0], abs=1e-6)
    assert intra_list_distance(orthogonal).tolist() == pytest.approx([1.0])
    c = 1 / math.sqrt(2)  # pairs: (0, 1) cos 0, (0, 2) and (1, 2) cos 1/√2
    assert intra_list_distance(mixed).tolist() == pytest.approx([1 - (0 + c + c) / 3])


def test_exposure_gini_counts_the_items_never_recommended():
    assert exposure_gini([5, 5, 5, 5], 4) == pytest.approx(0.0)
    assert exposure_gini([7], 4) == pytest.approx(0.75)  # one of four items takes every slot: (n-1)/n
    assert exposure_gini([1, 3], 2) == pytest.approx(0.25)  # mean absolute difference 2 / (2 · mean 2) / 2
    assert math.isnan(exposure_gini([], 10))


def test_live_quality_judges_each_event_against_the_recommendation_live_before_it():
    q = LiveQuality(k=3, window=100)
    assert q.judge(["u1"], ["a"]) == 0  # no recommendation live yet: not judged
    q.record(["u1", "u2"], [["a", "b", "c", "d"], ["x", "y", "z"]], [0.5, 0.7])
    assert q.judge(["u1", "u2", "u1", "u3"], ["b", "q", "d", "a"]) == 3  # "d" is beyond k = 3
    snap = q.snapshot(n_items=10)
    assert (snap.judged, snap.recall, snap.mrr) == (3, pytest.approx(1 / 3), pytest.approx(0.5 / 3))
    assert snap.coverage == pytest.approx(6 / 10)  # a b c x y z
    assert snap.intra_list_distance == pytest.approx(0.6)
    assert snap.exposure_gini == pytest.approx(exposure_gini([1] * 6, 10))
    q.record(["u1"], [["a", "q", "r"]])  # the next event of u1 is judged against this one
    q.judge(["u1"], ["q"])
    assert q.snapshot(10).mrr == pytest.approx((0.5 + 0 + 0 + 0.5) / 4)


def test_the_window_keeps_the_last_recommendations_and_judgements():
    q = LiveQuality(k=1, window=2)
    q.record(["u1", "u2", "u3"], [["a"], ["b"], ["c"]])
    snap = q.snapshot(3)
    assert (snap.recommendations, snap.coverage) == (2, pytest.approx(2 / 3))  # "a" left the window
    q.judge(["u1", "u2", "u3"], ["a", "x", "c"])
    assert q.snapshot(3).judged == 2 and q.snapshot(3).recall == pytest.approx(0.5)


def test_live_lists_are_bounded_and_forgotten_users_are_not_judged():
    q = LiveQuality(k=2, window=10, max_users=2)
    q.record(["u1", "u2", "u3"], [["a"], ["b"], ["c"]])
    assert q.judge(["u1", "u2", "u3"], ["a", "b", "c"]) == 2  # u1, least recently active, was dropped
    q.forget("u2")
    assert q.judge(["u2"], ["b"]) == 0


def test_an_empty_window_reports_nan():
    snap = LiveQuality().snapshot(5)
    figures = (snap.recall, snap.mrr, snap.coverage, snap.intra_list_distance, snap.exposure_gini)
    assert snap.judged == 0 and all(np.isnan(x) for x in figures)
