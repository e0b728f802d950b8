"""The repeat-or-explore mixture on a synthetic log whose users have planted repeat habits."""

import numpy as np
import pytest

from engine.fold.online import OnlineConfig
from engine.offline.evaluation import calibration, evaluate_stream
from engine.offline.synthetic import catalog_log
from engine.offline.train import TrainConfig, train


@pytest.fixture(scope="module")
def habits():
    cl = catalog_log(
        n_users=120, n_items=400, n_topics=4, events_per_user=20, cold_share=0.0, focus=0.5, seed=2,
        repeat_share=(0.0, 0.9),
    )
    train_end = int(0.7 * len(cl.log))
    cfg = TrainConfig.of(min_steps=0, epochs=10, batch_size=100, dim=16, profile_items=16)
    res = train(cl.log.slice(0, train_end), cfg)
    rr = evaluate_stream(res.model, res.item_ids, cl.log, train_end, online=OnlineConfig(enabled=False))
    return cl, rr


def test_explore_probability_rises_for_users_who_habitually_explore(habits):
    cl, rr = habits
    users = cl.log.users[rr.rows]
    rate = np.array([cl.repeat_of_user[u] for u in users])
    late = ~np.isnan(rr.explore_prob)
    explorers = late & (rate < 0.25)
    repeaters = late & (rate > 0.65)
    assert explorers.sum() > 100 and repeaters.sum() > 100
    # planted: three in four of the explorers' late events are new to them, one in five of the repeaters'
    new = ~rr.repeat
    assert new[explorers].mean() > new[repeaters].mean() + 0.4
    assert rr.explore_prob[explorers].mean() > rr.explore_prob[repeaters].mean() + 0.25
    per_user = {}
    for u, p in zip(users[late], rr.explore_prob[late]):
        per_user.setdefault(u, []).append(p)
    names = sorted(per_user)
    corr = np.corrcoef([cl.repeat_of_user[u] for u in names], [np.mean(per_user[u]) for u in names])[0, 1]
    assert corr < -0.7


def test_explore_probability_is_calibrated(habits):
    _, rr = habits
    cal = calibration(rr.explore_prob, ~rr.repeat)
    assert cal["n"] == (~np.isnan(rr.explore_prob)).sum() > 0.9 * len(rr.rows)  # NaN: no profile yet
    assert abs(cal["mean_predicted"] - cal["observed"]) < 0.05 and cal["ece"] < 0.08


def test_calibration_of_known_probabilities():
    p = np.array([0.1] * 10 + [0.9] * 10)
    y = np.array([1] + [0] * 9 + [1] * 9 + [0])
    cal = calibration(p, y)
    assert cal["ece"] == pytest.approx(0.0) and cal["brier"] == pytest.approx(0.09)
    assert [b["n"] for b in cal["bins"]] == [10, 10]
