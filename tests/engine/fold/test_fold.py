"""The user and item stages: batching, replays, restores, new items, target ranks, online-learning
examples."""

import numpy as np
import torch

from engine.fold.items import ItemStage
from engine.fold.table import ItemTable
from engine.fold.users import SourcedEvent, UserStage, rank_of, user_partition_name
from engine.offline.evaluation import TargetRanks
from engine.state.codec import decode_user
from engine.state.store import MemoryStateStore
from schemas import EVENT_TYPES, Interaction


def _events(log, start=0, stop=None, partition=0):
    stop = len(log) if stop is None else stop
    return [
        SourcedEvent(
            Interaction(log.users[k], log.items[k], float(log.ts[k]), EVENT_TYPES[log.event_types[k]]),
            partition,
            k,
            0.0,
        )
        for k in range(start, stop)
    ]


def _stages(model, item_ids, store=None):
    store = store or MemoryStateStore()
    table = ItemTable(model, item_ids, torch.device("cpu"))
    return (
        UserStage(model, table, store, model_version="m1", top_k=5),
        ItemStage(model, table, store.partition("items")),
        store,
    )


def _run(model, item_ids, events, batch):
    users, items, store = _stages(model, item_ids)
    recs = []
    for b0 in range(0, len(events), batch):
        res = users.fold(events[b0 : b0 + batch])
        items.fold(res.item_updates)
        users.commit(res, items)
        recs.extend(res.recommendations)
    return store, items, recs


def test_one_recommendation_per_user_per_batch_naming_the_last_event(model, item_ids, log):
    users, _, _ = _stages(model, item_ids)
    events = _events(log, 0, 50)
    res = users.fold(events)
    assert sorted(r.user_id for r in res.recommendations) == sorted(set(log.users[:50]))
    last = {e.event.user_id: e.offset for e in events}
    for r in res.recommendations:
        assert r.source.offset == last[r.user_id] and r.source.topic == "tide.interactions"
        assert len(r.items) == 5 and r.model_version == "m1"
        scores = [s.score for s in r.items]
        assert scores == sorted(scores, reverse=True)
    assert res.n_folded == 50 and res.n_skipped == 0 and len(res.item_updates) == 50


def test_batched_fold_equals_event_by_event_fold(model, item_ids, log):
    """Rounds keep each user's order exact: batch size changes nothing but item-vector staleness,
    which is zero here because item memories are folded only between batches (mem_proj starts at 0)."""
    events = _events(log, 0, 200)
    s1, _, _ = _run(model, item_ids, events, batch=1)
    s2, _, _ = _run(model, item_ids, events, batch=64)
    p1, p2 = s1.partition(user_partition_name(0)), s2.partition(user_partition_name(0))
    for key, raw in p1.items():
        a, b = decode_user(raw), decode_user(p2.get(key))
        assert np.allclose(a.memory, b.memory, atol=1e-5)
        assert a.hist_items == b.hist_items and a.offset == b.offset


def test_replayed_events_are_skipped_and_state_unchanged(model, item_ids, log):
    users, items, store = _stages(model, item_ids)
    events = _events(log, 0, 100)
    res = users.fold(events)
    items.fold(res.item_updates)
    users.commit(res, items)
    before = dict(store.partition(user_partition_name(0)).items())
    item_mem = items.table.memory.clone()
    again = users.fold(events[40:])
    assert again.n_folded == 0 and again.n_skipped == 60 and again.recommendations == []
    assert dict(store.partition(user_partition_name(0)).items()) == before
    # the item stage also refuses updates at or below its watermark
    assert items.fold(res.item_updates) == []
    assert torch.equal(items.table.memory, item_mem)


def test_item_stage_restores_from_its_store(model, item_ids, log):
    store, items, _ = _run(model, item_ids, _events(log, 0, 120), batch=40)
    _, restored, _ = _stages(model, item_ids, store)
    assert restored.watermarks == {0: 119}
    assert torch.allclose(restored.table.memory, items.table.memory)


def test_item_memories_restored_a_few_at_a_time_are_the_same(model, item_ids, log, monkeypatch):
    from engine.fold import items as item_stage

    store, items, _ = _run(model, item_ids, _events(log, 0, 120), batch=40)
    monkeypatch.setattr(item_stage, "RESTORE_CHUNK", 4)
    _, restored, _ = _stages(model, item_ids, store)
    assert torch.equal(restored.table.memory, items.table.memory)
    assert np.array_equal(restored.table.count, items.table.count)


def test_unknown_items_join_the_table(model, item_ids):
    users, items, _ = _stages(model, item_ids)
    res = users.fold([SourcedEvent(Interaction("u", "brand-new", 1.0, "view"), 0, 0, 0.0)])
    items.fold(res.item_updates)
    assert "brand-new" in items.table.index and len(items.table) == 31


def test_rank_of_counts_ties_half():
    s = torch.tensor([[3.0, 1.0, 3.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    assert rank_of(s, torch.tensor([0, 2])).tolist() == [1.5, 2.5]


def test_ranks_with_targets(model, item_ids, log):
    users, _, _ = _stages(model, item_ids)
    events = _events(log, 0, 30)
    targets = [log.items[k + 1] if k % 2 else None for k in range(30)]
    ranks = TargetRanks(targets)
    users.fold(events, observer=ranks)
    assert np.isnan(ranks.ranks[::2]).all()
    assert ((ranks.ranks[1::2] >= 1) & (ranks.ranks[1::2] <= 30)).all()


def test_item_graph_dense_and_sparse_paths_agree():
    from engine.fold import graph as g

    prev = np.array([-1, 0, 1, 0, 2, 0])
    rows = np.array([0, 1, 0, 1, 3, 2])
    dense = g.ItemGraph(4)
    dense.observe(prev, rows)
    sparse = g.ItemGraph(4)
    sparse._dense = None
    sparse.observe(prev, rows)
    cpu = torch.device("cpu")

    def as_dict(pairs):
        return {(u, i): f for u, i, f in zip(pairs[0].tolist(), pairs[1].tolist(), pairs[2].tolist())}

    last = np.array([[0], [2], [-1]])
    a = as_dict(dense.transition_pairs(last, 4, cpu))
    assert a == as_dict(sparse.transition_pairs(last, 4, cpu))
    # out of item 0: to 1 twice, to 2 once; user 2 has no history
    assert set(a) == {(0, 1), (0, 2), (1, 3)} and np.allclose(a[(0, 1)], [np.log1p(2), 2 / 3, 0.0])
    # the wider context: transitions out of the items before the last one, halved per step back
    ctx = as_dict(dense.transition_pairs(np.array([[0, 2, 1]]), 4, cpu))
    assert ctx.keys() == {(0, 0), (0, 1), (0, 2), (0, 3)}
    assert np.allclose([ctx[(0, i)][2] for i in range(4)], np.log1p([0.25, 0.0, 0.0, 0.5]))
    assert ctx == as_dict(sparse.transition_pairs(np.array([[0, 2, 1]]), 4, cpu))
    # a restored row matches
    restored = g.ItemGraph(4)
    ids = ["a", "b", "c", "d"]
    restored.decode_row(0, dense.encode_row(0, ids), ids.index)
    assert as_dict(restored.transition_pairs(np.array([[0]]), 4, cpu)) == {
        k: v for k, v in a.items() if k[0] == 0
    }


def test_a_hub_items_transitions_are_cut_to_the_strongest(monkeypatch):
    from engine.fold import graph as g

    monkeypatch.setattr(g, "TRANSITIONS_PER_ITEM", 3)
    # item 0 leads to 1 three times, 2 twice, 3, 4, 5 once, then 6 twice: a row of six is cut to three
    prev = np.zeros(10, np.int64)
    rows = np.array([1, 1, 2, 1, 2, 3, 4, 5, 6, 6])
    dense, sparse = g.ItemGraph(8), g.ItemGraph(8)
    sparse._dense = None
    for graph in (dense, sparse):
        graph.observe(prev, rows)
    # the sixth next item (6) makes the cut: 1 (3), 2 (2), 3 (1, seen before 4, 5, 6) stay; then 6 again
    assert dense.out[0] == sparse.out[0] == {1: 3.0, 2: 2.0, 3: 1.0, 6: 1.0}
    cpu = torch.device("cpu")
    pairs = dense.transition_pairs(np.array([[0]]), 8, cpu)
    assert sorted(pairs[1].tolist()) == sorted(dense.out[0])  # the dense matrix was cut with the row
    assert torch.equal(pairs[2], sparse.transition_pairs(np.array([[0]]), 8, cpu)[2])


def test_item_graph_snapshot_edges_are_the_window_undirected():
    from engine.fold.graph import ItemGraph

    g = ItemGraph(4)
    g.observe(np.array([-1, 0, 1, 0, 2]), np.array([0, 1, 0, 1, 2]))
    assert g.events_since_snapshot == 5
    edges, w = g.snapshot_edges(4, torch.device("cpu"))
    pairs = {(a, b): float(x) for a, b, x in zip(*edges.tolist(), w.tolist())}
    # 0→1 twice and 1→0 once: one undirected edge of count 3; the self-loop 2→2 is dropped
    assert pairs == {(0, 1): np.float32(np.log1p(3)), (1, 0): np.float32(np.log1p(3))}
    assert g.events_since_snapshot == 0 and g.snapshot_edges(4, torch.device("cpu"))[0].shape == (2, 0)


def test_graph_snapshot_states_are_taken_and_restored(item_ids, log):
    from models.interest import InterestConfig, InterestModel

    torch.manual_seed(0)
    m = InterestModel(
        InterestConfig(
            n_items=30, dim=16, time_dim=8, profile_items=5, use_graph_snapshots=True, snapshot_every=50
        )
    ).eval()
    store, items, _ = _run(m, item_ids, _events(log, 0, 120), batch=40)
    assert items.table.graph_state.abs().sum() > 0  # two snapshots were taken (after 80 and 120 events)
    _, restored, _ = _stages(m, item_ids, store)
    assert torch.allclose(restored.table.graph_state, items.table.graph_state, atol=1e-2)  # stored as f16
    assert torch.allclose(restored.table.vectors(), items.table.vectors(), atol=1e-2)


def test_recommend_at_the_emission_time_is_the_emitted_one_and_later_is_projected(model, item_ids, log):
    users, _, store = _stages(model, item_ids)
    res = users.fold(_events(log, 0, 60))
    users.commit(res)
    rec = res.recommendations[0]
    st = decode_user(store.partition(user_partition_name(0)).get(rec.user_id.encode("utf-8")))
    assert st.last_t < users.emission_time(st) <= st.last_t + min(np.diff(st.hist_times[::-1]))
    now = users.recommend(st, users.emission_time(st))
    assert [i.item_id for i in now] == [i.item_id for i in rec.items]
    assert np.allclose([i.score for i in now], [i.score for i in rec.items], atol=1e-5)
    torch.nn.init.normal_(model.projection.weight)  # a trained projection; zero (identity) at init
    day_later = users.recommend(st, st.last_t + 86_400.0)
    assert not np.allclose([i.score for i in day_later], [i.score for i in users.recommend(st, st.last_t)])


def test_top_k_in_user_chunks_equals_one_pass(model, item_ids, log, monkeypatch):
    from engine.fold import users as fold

    events = _events(log, 0, 80)
    whole = _stages(model, item_ids)[0].fold(events).recommendations
    monkeypatch.setattr(fold, "SCORE_BUDGET", 3 * len(item_ids))  # three users at a time
    chunked = _stages(model, item_ids)[0].fold(events).recommendations
    assert [[i.item_id for i in r.items] for r in chunked] == [[i.item_id for i in r.items] for r in whole]


def test_online_learner_steps_per_examples_in_order_whatever_the_batches(model, item_ids, log):
    import copy

    from engine.fold.online import OnlineConfig, OnlineLearner

    def run(batches):
        m = copy.deepcopy(model)
        users, items, _ = _stages(m, item_ids)
        learner = OnlineLearner(m, users.table, OnlineConfig(examples_per_step=10, lr=1e-2))
        steps, start = [], 0
        for size in batches:
            res = users.fold(_events(log, start, start + size), example_rate=1.0)
            items.fold(res.item_updates)
            users.commit(res, items)
            learner.learn(res.examples)
            steps.append(learner.steps)
            start += size
        return steps, m

    steps, small = run([6, 6, 20, 8])
    assert steps == [0, 1, 3, 4]  # 6 kept for later; 12: one step; 32: three; 40: four
    _, large = run([40])
    assert not torch.equal(small.pair_mlp[0].weight, model.pair_mlp[0].weight)
    # the same four steps on the same examples: only scoring staleness inside a batch differs
    assert torch.allclose(small.pair_mlp[0].weight, large.pair_mlp[0].weight, atol=0.05)


def test_background_learner_lands_the_steps_a_synchronous_one_takes(model, item_ids, log):
    """A step's gradient is computed on another thread from inputs taken when it fell due: item
    memories and transitions that move while it runs do not reach it, and landed before the next
    batch it leaves the model exactly where a synchronous learner does."""
    import copy
    import threading

    from engine.fold.online import OnlineConfig, OnlineLearner

    def run(background):
        m = copy.deepcopy(model)
        users, items, _ = _stages(m, item_ids)
        cfg = OnlineConfig(examples_per_step=9, lr=1e-2, background=background)
        learner = OnlineLearner(m, users.table, cfg)
        gate = threading.Event()
        compute = learner._gradient
        if background:  # held until the item stage below has moved things (a synchronous step runs at once)
            learner._gradient = lambda inputs: (gate.wait(10), compute(inputs))[1]
        start, waiting = 0, []
        for size in (10, 10, 10, 10):
            res = users.fold(_events(log, start, start + size), example_rate=1.0)
            items.fold(res.item_updates)
            users.commit(res, items)
            gate.clear()
            learner.learn(res.examples)
            waiting.append(learner.examples_waiting)
            # while the gradient is held, what the item stage does: item memories and transitions move
            gen = torch.Generator().manual_seed(start)
            rows = torch.randperm(len(item_ids), generator=gen)[:5]
            users.table.set_memory(rows, torch.randn(5, m.cfg.dim, generator=gen))
            users.table.graph.observe(rows[:4].numpy(), rows[1:].numpy())
            gate.set()
            learner.drain()
            start += size
        learner.close()
        return m, learner.steps, waiting

    sync, sync_steps, _ = run(False)
    bg, bg_steps, waiting = run(True)
    assert sync_steps == bg_steps == 4  # 40 examples, 9 per step
    assert waiting == [10, 11, 12, 13]  # 1, 2, 3, 4 collected + the 9 in flight
    for a, b in zip(sync.parameters(), bg.parameters()):
        assert torch.equal(a, b)


def test_background_learner_waits_rather_than_fall_behind(model, item_ids, log):
    import copy
    import threading

    from engine.fold.online import OnlineConfig, OnlineLearner

    m = copy.deepcopy(model)
    users, _, _ = _stages(m, item_ids)
    cfg = OnlineConfig(examples_per_step=5, lr=1e-2, background=True, max_steps_behind=2)
    learner = OnlineLearner(m, users.table, cfg)
    gate = threading.Event()
    compute = learner._gradient
    learner._gradient = lambda inputs: (gate.wait(10), compute(inputs))[1]
    res = users.fold(_events(log, 0, 30), example_rate=1.0)  # 30 examples: six steps' worth
    done = threading.Event()
    threading.Thread(target=lambda: (learner.learn(res.examples), done.set()), daemon=True).start()
    assert not done.wait(0.5)  # it waits for the held step instead of piling up examples
    gate.set()
    assert done.wait(30)
    assert learner.steps == 4 and learner.examples_waiting == 10  # one step in flight, 5 collected
    learner.close()
    assert learner.steps == 5


def test_sampled_examples_are_the_same_events_whatever_the_batches(model, item_ids, log):
    import copy

    def examples(batches):
        users, items, _ = _stages(copy.deepcopy(model), item_ids)
        got, start = [], 0
        for size in batches:
            res = users.fold(_events(log, start, start + size), example_rate=0.3)
            items.fold(res.item_updates)
            users.commit(res, items)
            if res.examples is not None:
                got.append(torch.stack([res.examples.targets, res.examples.ctx.hist_ages[:, 0].long()], 1))
            start += size
        return torch.cat(got)

    whole = examples([60])
    assert 6 <= len(whole) <= 30  # about 0.3 of 60
    assert torch.equal(examples([7, 13, 25, 15]), whole)


def test_a_step_scored_in_chunks_of_examples_has_the_same_gradient(model, item_ids, log, monkeypatch):
    """Over :data:`LEARN_BUDGET` example–item pairs, a step scores its examples a few at a time and
    adds up their gradients: the gradient of one pass, but for rounding."""
    from engine.fold import online
    from engine.fold.online import OnlineConfig, OnlineLearner

    users, items, _ = _stages(model, item_ids)
    learner = OnlineLearner(model, users.table, OnlineConfig(examples_per_step=40))
    res = users.fold(_events(log, 0, 60), example_rate=1.0)
    items.fold(res.item_updates)
    learner._pending, learner._n_pending = [res.examples], len(res.examples.targets)
    inputs = learner._take(40)
    whole = learner._gradient(inputs)
    monkeypatch.setattr(online, "LEARN_BUDGET", 7 * len(item_ids))  # 7 examples a chunk
    chunked = learner._gradient(inputs)
    assert whole is not None and chunked is not None
    assert abs(whole.loss - chunked.loss) < 1e-5
    assert sum(g is not None for g in whole.grads) > 5
    for a, b in zip(whole.grads, chunked.grads):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
