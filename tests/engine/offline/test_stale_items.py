"""The streaming evaluator with the item stage a number of events behind the user stage."""

import numpy as np
import pytest
import torch

from engine.fold.online import OnlineConfig
from engine.fold.table import ItemTable
from engine.offline import evaluation
from engine.offline.evaluation import evaluate_stream
from engine.offline.stale_items import DelayedItemStage
from engine.pipeline import Pipeline

OFF = OnlineConfig(enabled=False)


@pytest.fixture
def pipelines(monkeypatch):
    """Every pipeline the evaluator builds, in order."""
    built: list[Pipeline] = []
    build = evaluation._pipeline

    def spy(*args, **kwargs):
        built.append(build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(evaluation, "_pipeline", spy)
    return built


def _ranks(model, item_ids, log, **kwargs):
    return evaluate_stream(model, item_ids, log, 300, batch_size=64, online=OFF, **kwargs).ranks


def test_no_delay_is_the_undelayed_path(model, item_ids, log, monkeypatch):
    today = _ranks(model, item_ids, log)
    zero = _ranks(model, item_ids, log, item_delay=0)
    build = evaluation._pipeline

    def wrapped(*args, **kwargs):  # the delayed stage at delay 0, where the evaluator takes the plain one
        p = build(*args, **kwargs)
        p.items = DelayedItemStage(p.items.model, p.items.table, 0)
        return p

    monkeypatch.setattr(evaluation, "_pipeline", wrapped)
    wrapper = _ranks(model, item_ids, log)
    for name, r in today.items():
        assert np.array_equal(zero[name], r) and np.array_equal(wrapper[name], r), name


def test_a_delay_longer_than_the_log_leaves_the_items_as_they_started(model, item_ids, log, pipelines):
    stale = _ranks(model, item_ids, log, item_delay=len(log) + 1)
    fresh = _ranks(model, item_ids, log)
    held, folded = pipelines[0].items, pipelines[1].items
    assert isinstance(held, DelayedItemStage) and held.n_held == len(log)
    t, start = held.table, ItemTable(model, item_ids, torch.device("cpu"))
    assert len(t) == len(start)
    assert torch.equal(t.memory, start.memory) and torch.equal(t.graph_state, start.graph_state)
    assert np.array_equal(t.count, start.count) and np.isnan(t.last_t).all()
    assert np.array_equal(t.graph.trend, start.graph.trend)
    assert held.watermarks == {}
    # the same stream with no delay does change them, and the ranks
    assert folded.table.memory.abs().sum() > 0 and folded.table.count.sum() == len(log)
    assert not np.array_equal(stale["model"], fresh["model"])
    assert np.array_equal(stale["popularity"], fresh["popularity"])


@pytest.mark.parametrize("delay", [1, 64, 100, 333])
def test_the_delay_is_in_events_not_batches(model, item_ids, log, pipelines, delay):
    _ranks(model, item_ids, log, item_delay=delay)
    items = pipelines[0].items
    # after the last batch (of 64), every event but the last ``delay`` is folded into the items
    assert items.n_held == delay
    assert items.table.count.sum() == len(log) - delay
    assert items.watermarks == {0: len(log) - 1 - delay}


def test_a_negative_delay_is_refused(model, item_ids):
    with pytest.raises(ValueError):
        DelayedItemStage(model, ItemTable(model, item_ids, torch.device("cpu")), -1)
