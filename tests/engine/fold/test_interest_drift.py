"""Interest drift (engine/fold/drift.py): the distance, the detector's hysteresis, the trajectory, and
detection on a synthetic log with planted drifts (engine/offline/drift_eval.py).

The distance reads only the user's item profile, so an untrained model folds the log as well as a
trained one would for this purpose.
"""

import pytest
import torch

from engine.fold.drift import DriftDetector, summary_items, trajectory
from engine.fold.table import ItemTable
from engine.fold.users import SourcedEvent, UserStage
from engine.offline.drift_eval import detect_drifts, drift_distances
from engine.offline.synthetic import drifting_log
from engine.state.store import MemoryStateStore
from models.interest import InterestConfig, InterestModel
from schemas import Interaction


def test_a_user_drifts_once_until_their_distance_falls_back() -> None:
    det = DriftDetector(threshold=0.5, min_events=3, rearm=0.8)
    assert det.check(["a"], [2], [0.9]) == []  # too few events yet
    [f] = det.check(["b", "a"], [5, 3], [0.1, 0.6])
    assert (f.user_id, f.index, f.distance) == ("a", 1, pytest.approx(0.6))
    assert det.check(["a"], [4], [0.95]) == []  # still in drift: reported once
    assert det.check(["a"], [5], [0.41]) == []  # above rearm × threshold (0.4): still in drift
    assert det.check(["a"], [6], [0.3]) == []  # rearmed
    assert [f.user_id for f in det.check(["a"], [7], [0.55])] == ["a"]
    det.forget("a")
    assert [f.user_id for f in det.check(["a"], [8], [0.7])] == ["a"]
    assert not DriftDetector(0.0).enabled


def test_evaluating_changes_nothing_until_settled() -> None:
    """A worker settles a batch's drifts once its transaction commits: a batch folded again after an
    abort finds the same drifts."""
    det = DriftDetector(threshold=0.5, min_events=0)
    first = det.evaluate(["a", "b"], [5, 5], [0.9, 0.1])
    assert det.evaluate(["a", "b"], [5, 5], [0.9, 0.1]) == first
    assert [f.user_id for f in first[0]] == ["a"] and first[1] == []
    det.settle(*first)
    assert det.evaluate(["a"], [6], [0.95]) == ([], [])  # in drift now
    assert det.evaluate(["a"], [7], [0.1]) == ([], ["a"])  # would rearm once settled


def test_the_detector_tracks_a_bounded_number_of_users() -> None:
    det = DriftDetector(threshold=0.5, min_events=0, max_tracked=2)
    det.check(["a", "b", "c"], [1, 1, 1], [0.9, 0.9, 0.9])
    assert [f.user_id for f in det.check(["a", "c"], [2, 2], [0.9, 0.9])] == ["a"]  # a was dropped


@pytest.fixture(scope="module")
def planted():  # type: ignore[no-untyped-def]
    """A log of 60 users × 40 events, half of whom move to another topic halfway, folded by an
    untrained model."""
    d = drifting_log(n_users=60, n_items=60, events_per_user=40, drift_share=0.5, seed=3)
    torch.manual_seed(0)
    model = InterestModel(InterestConfig(n_items=60, dim=16, time_dim=8, profile_items=16)).eval()
    return d, drift_distances(model, [f"i{i}" for i in range(60)], d)


def test_planted_drifts_are_found_and_steady_users_left_alone(planted) -> None:  # type: ignore[no-untyped-def]
    d, distances = planted
    score = detect_drifts(d, distances, threshold=0.45)
    assert score.drifting > 20 and score.steady > 20
    assert score.hit_rate >= 0.8
    assert score.false_alarm_rate <= 0.1
    assert score.early == 0
    # a threshold past every distance finds nothing; one at zero reports every user
    assert detect_drifts(d, distances, threshold=1.01).hits == 0
    assert detect_drifts(d, distances, threshold=1e-9).false_alarm_rate > 0.5


def test_the_summary_and_the_trajectory_name_the_old_and_new_interest() -> None:
    torch.manual_seed(0)
    model = InterestModel(InterestConfig(n_items=4, dim=8, time_dim=4, profile_items=8)).eval()
    stage = UserStage(model, ItemTable(model, ["a", "b", "c", "d"], torch.device("cpu")), MemoryStateStore(),
                      model_version="test")
    stage.measure_drift = True
    items = ["a", "b"] * 15 + ["c", "d"] * 10  # a long run of a/b, then a shorter one of c/d
    res = None
    for n, item in enumerate(items):
        with torch.no_grad():
            res = stage.fold([SourcedEvent(Interaction("u", item, float(n), "click"), 0, n, 0.0)])
        stage.commit(res)
    assert res is not None and res.drift is not None
    assert res.drift[0] > 0.5  # the recent c/d is far from the a/b before it
    before, after = summary_items(res.states[0], n=2)
    assert set(before) == {"a", "b"} and set(after) == {"c", "d"}
    points = trajectory(res.states[0])
    assert [p.time for p in points] == sorted(p.time for p in points)
    assert points[-1].item_id == "d" and set(points[-1].interest[:2]) == {"c", "d"}
    assert all(p.distance > 0.5 for p in points)  # the history ring holds only the c/d run
