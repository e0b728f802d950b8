"""The pipeline: the order of its steps, a failing stage that changes nothing, the no-op variant, and
the item table's growth."""

import numpy as np
import pytest
import torch

from engine.fold.items import ItemStage
from engine.fold.table import ItemTable
from engine.fold.users import SourcedEvent, UserStage
from engine.pipeline import NoopPipeline, Pipeline, StageFailed
from engine.state.store import MemoryStateStore
from schemas import EVENT_TYPES, Interaction


def _events(log, start, stop):
    return [
        SourcedEvent(
            Interaction(log.users[k], log.items[k], float(log.ts[k]), EVENT_TYPES[log.event_types[k]]),
            0,
            k,
            0.0,
        )
        for k in range(start, stop)
    ]


def _pipeline(model, item_ids, steps):
    store = MemoryStateStore()
    table = ItemTable(model, item_ids, torch.device("cpu"))
    users = UserStage(model, table, store, model_version="m1", top_k=5)
    return Pipeline(users, ItemStage(model, table, store.partition("items")), step=steps.append), store


def _user_state(store):
    return dict(store.partition("users-0").items())


def test_steps_run_in_order_and_state_is_written_at_commit(model, item_ids, log):
    steps: list[str] = []
    pipeline, store = _pipeline(model, item_ids, steps)
    emitted = []
    outcome = pipeline.fold(
        _events(log, 0, 40), emit=lambda recs: (steps.append("emit"), emitted.extend(recs))
    )
    assert steps == ["folded", "emit", "produced", "item_stage"]
    assert _user_state(store) == {}  # nothing is written before commit
    assert emitted == outcome.recommendations and outcome.n_folded == 40
    assert len(outcome.recommendations) == len(set(log.users[:40]))
    pipeline.commit(outcome)
    assert steps[-1] == "state_written"
    assert len(_user_state(store)) == len(set(log.users[:40]))
    again = pipeline.fold(_events(log, 0, 40))  # replayed input: skipped, nothing to write
    assert (again.n_folded, again.n_skipped, again.recommendations) == (0, 40, [])


def test_a_failing_stage_raises_and_changes_no_state(model, item_ids, log, monkeypatch):
    pipeline, store = _pipeline(model, item_ids, [])
    pipeline.commit(pipeline.fold(_events(log, 0, 20)))
    before_users, before_items = _user_state(store), dict(store.partition("items").items())
    memory = pipeline.items.table.memory.clone()

    def broken(updates):
        raise ValueError("boom")

    monkeypatch.setattr(pipeline.items, "fold", broken)
    with pytest.raises(StageFailed, match="item stage: ValueError: boom") as err:
        pipeline.fold(_events(log, 20, 40))
    assert isinstance(err.value.__cause__, ValueError)
    assert _user_state(store) == before_users and dict(store.partition("items").items()) == before_items
    assert torch.equal(pipeline.items.table.memory, memory)


def test_noop_pipeline_answers_each_user_with_a_fixed_list():
    events = [SourcedEvent(Interaction(u, "x", 1.0), 3, off, 0.0) for off, u in enumerate("abab")]
    noop = NoopPipeline("v1", "tide.interactions", 4)
    emitted = []
    outcome = noop.fold(events, emit=emitted.extend)
    assert [r.user_id for r in emitted] == ["a", "b"] and outcome.n_folded == 4
    assert [(r.source.offset, r.source.first_offset) for r in emitted] == [(2, 0), (3, 1)]
    assert [i.item_id for i in emitted[0].items] == ["i0", "i1", "i2", "i3"]
    noop.commit(outcome)


def test_item_table_grows_by_a_quarter_and_keeps_rows(model, item_ids):
    table = ItemTable(model, item_ids, torch.device("cpu"))
    static = table._static.clone()
    held = table.graph_state  # what a learner thread may hold while the fold runs
    capacities = set()
    for k in range(1000):
        assert table.row(f"new{k}") == 30 + k
        capacities.add(table._capacity)
    assert len(table) == 1030 and table.ids[-1] == "new999" and table.index["new500"] == 530
    # a quarter more each time: 17 reallocations for 1,000 items, at most a quarter of the rows spare
    assert sorted(capacities) == [
        37, 46, 57, 71, 88, 110, 137, 171, 213, 266, 332, 415, 518, 647, 808, 1010, 1262
    ]
    assert torch.equal(table._static[:30], static) and not table._static[30:].any()
    assert table.bias.shape == (1030,) and table.attribute_ids.shape == (1030, 0)
    assert np.isnan(table.last_t[30:]).all() and not table.count.any()
    assert table.vectors().shape == (1030, model.cfg.dim)
    table.set_graph_state(torch.ones(1030, model.cfg.dim))
    assert not held.any()  # replaced, never written in place
    assert bool(table.graph_state.eq(1).all())
