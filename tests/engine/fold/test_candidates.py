"""The candidate index: its recall on a fixed catalogue, its refresh and rebuild, and candidate scoring
against exact scoring in the user stage."""

import numpy as np
import torch

from engine.fold.candidates import CandidateIndex, IndexConfig, recall_at
from engine.fold.items import ItemStage
from engine.fold.scoring import scoring_inputs
from engine.fold.table import ItemTable
from engine.fold.users import UserStage
from engine.pipeline import Pipeline
from engine.state.store import MemoryStateStore
from models.interest import InterestConfig, InterestModel
from tests.engine.conftest import tiny_log
from tests.engine.fold.test_fold import _events


def _catalogue(n=20_000, topics=200, d=64, seed=0):
    """Items around topic centres with a popularity term, as ``[v_i ‖ a_i]``, and user queries near
    the topics, as ``[q ‖ 1]``."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((topics, d)).astype(np.float32)
    items = np.empty((n, d + 1), np.float32)
    items[:, :d] = 0.3 * centres[rng.integers(0, topics, n)] + 0.1 * rng.standard_normal((n, d))
    items[:, d] = 0.5 * rng.standard_normal(n)
    queries = np.empty((256, d + 1), np.float32)
    queries[:, :d] = centres[rng.integers(0, topics, 256)] + 0.3 * rng.standard_normal((256, d))
    queries[:, d] = 1.0
    return items, queries


def _exact_top(items, queries, k):
    return np.argsort(-(queries @ items.T), axis=1)[:, :k]


def test_index_recall_of_the_exact_top_100_at_the_operating_point():
    items, queries = _catalogue()
    index = CandidateIndex(lambda rows: items if rows is None else items[rows], IndexConfig())
    index.build()
    assert recall_at(index.search(queries), _exact_top(items, queries, 100)) >= 0.98


def _aligned(q, items, share=0.95):
    """A vector along ``q`` with ``share`` of the catalogue's largest norm: the best by far for ``q``,
    within the radius the index was built for."""
    return share * np.linalg.norm(items, axis=1).max() * q / np.linalg.norm(q)


def test_a_changed_or_new_item_is_retrievable_from_the_next_refresh():
    items, queries = _catalogue(n=5_000)
    index = CandidateIndex(lambda rows: items if rows is None else items[rows], IndexConfig(n_candidates=10))
    index.build()
    q = queries[:1]
    row = int(np.argsort(queries[0] @ items.T)[0])  # the worst item for this user
    assert row not in index.search(q)[0]
    best = _aligned(q[0], items)
    items[row] = best
    assert row not in index.search(q)[0]  # indexed as it was until refreshed
    index.refresh([row], len(items))
    assert index.search(q)[0, 0] == row
    # a new item (a row past the indexed ones) is added by the same refresh
    grown = np.concatenate([items, 1.01 * best[None]])
    index.vectors_of = lambda rows: grown if rows is None else grown[rows]
    index.refresh([], len(grown))
    assert index.search(q)[0, 0] == len(items) and len(index) == len(grown)
    # a vector longer than any at the build is a candidate for everyone until a rebuild takes it in
    grown[7] = 3.0 * best
    index.refresh([7], len(grown))
    assert index.always().tolist() == [7] and index.rebuilding
    index.wait_for_rebuild(60)
    index.refresh([], len(grown))
    assert index.builds == 2 and index.always().tolist() == [] and index.search(q)[0, 0] == 7


def test_drift_past_the_bound_rebuilds_in_the_background_keeping_rows_refreshed_meanwhile():
    items, _ = _catalogue(n=5_000)
    moved, queries = _catalogue(n=5_000, seed=1)  # every vector elsewhere
    current = {"v": items}
    cfg = IndexConfig(n_candidates=10, check_every_s=0.0, rebuild_drift=0.2)
    index = CandidateIndex(lambda rows: current["v"] if rows is None else current["v"][rows], cfg)
    index.build()
    index.refresh([], len(items))
    assert index.builds == 1 and not index.rebuilding  # no drift: no rebuild
    current["v"] = moved
    index.refresh([], len(items))  # the check sees the drift and starts a rebuild from a snapshot
    assert index.last_drift > 0.2
    q = queries[:1]
    row = int(np.argsort(q[0] @ moved.T)[0])
    moved[row] = _aligned(q[0], moved)  # changed after the snapshot was taken
    index.refresh([row], len(items))
    index.wait_for_rebuild(60)
    index.refresh([], len(items))  # swaps the rebuild in, with the row changed meanwhile re-added
    assert index.builds == 2
    assert index.search(q)[0, 0] == row
    exact = _exact_top(moved, queries, 10)
    assert recall_at(index.search(queries, 100), exact) >= 0.95


def test_retrieval_vectors_give_the_explore_logit_without_its_pair_terms():
    torch.manual_seed(0)
    cfg = InterestConfig(n_items=40, dim=16, time_dim=8, profile_items=5, content_dim=6)
    model = InterestModel(cfg).eval()
    model.item_content.copy_(torch.nn.functional.normalize(torch.randn(40, 6), dim=-1))
    table = ItemTable(model, [f"i{i}" for i in range(40)], torch.device("cpu"))
    stage = UserStage(model, table, MemoryStateStore(), model_version="m")
    log = tiny_log(n_items=40)
    with torch.no_grad():
        res = stage.fold(_events(log, 0, 300))
        x = scoring_inputs(
            model, table.graph, table.vectors(), table.bias,
            torch.from_numpy(np.stack([s.memory for s in res.states])), stage.context(res.states),
            table.content(),
        )
        u = model.user_side(x)
        dot = model.retrieval_queries(u) @ torch.from_numpy(stage.retrieval_vectors(None)).T
        scores = model.item_scores(u, x)
    # outside the user's profile and transitions, the mixture's score is the explore logit minus a
    # per-user constant (its normaliser and log P(explore))
    related = torch.zeros_like(scores, dtype=torch.bool)
    related[x.transitions[0], x.transitions[1]] = True
    valid = x.prof_rows >= 0
    related[valid.nonzero(as_tuple=True)[0], x.prof_rows[valid]] = True
    assert (~related).sum(1).min() > 5
    diff = (dot - scores).masked_fill(related, float("nan"))
    spread = torch.nan_to_num(diff - diff.nanmean(1, keepdim=True), nan=0.0).abs().max()
    assert float(spread) < 1e-4


def _pipelines(model, n_items, index):
    table = ItemTable(model, [f"i{i}" for i in range(n_items)], torch.device("cpu"))
    store = MemoryStateStore()
    users = UserStage(model, table, store, model_version="m", top_k=10, index=index)
    return Pipeline(users, ItemStage(model, table, store.partition("items")))


def _model_and_events(n, n_users, n_events):
    torch.manual_seed(0)
    model = InterestModel(InterestConfig(n_items=n, dim=16, time_dim=8, profile_items=8)).eval()
    return model, _events(tiny_log(n_users=n_users, n_items=n, n_events=n_events))


def _recommendations(pipeline, events, batch=250):
    out = []
    for b in range(0, len(events), batch):
        outcome = pipeline.fold(events[b : b + batch])
        pipeline.commit(outcome)
        out.extend(outcome.recommendations)
    return out


def test_indexed_scoring_equals_exact_scoring_when_the_index_returns_every_item():
    n = 600
    model, events = _model_and_events(n, n_users=40, n_events=1_000)
    exact = _recommendations(_pipelines(model, n, None), events)
    every = IndexConfig(min_items=0, n_candidates=n, nprobe=n)
    indexed = _recommendations(_pipelines(model, n, every), events)
    assert len(exact) == len(indexed)
    for a, b in zip(exact, indexed):
        assert [i.item_id for i in a.items] == [i.item_id for i in b.items]
        assert np.allclose([i.score for i in a.items], [i.score for i in b.items], atol=1e-4)
        assert [i.reason for i in a.items] == [i.reason for i in b.items]


def test_indexed_scoring_keeps_most_of_the_exact_top_10_with_a_few_candidates():
    n = 2_000
    model, events = _model_and_events(n, n_users=60, n_events=800)
    exact = _recommendations(_pipelines(model, n, None), events)
    pipeline = _pipelines(model, n, IndexConfig(min_items=0, n_candidates=100, tail_sample=256))
    indexed = _recommendations(pipeline, events)
    overlap = np.mean([
        len({i.item_id for i in a.items} & {i.item_id for i in b.items}) / 10 for a, b in zip(exact, indexed)
    ])
    assert overlap >= 0.9
    assert pipeline.users.index is not None and len(pipeline.users.index) == n
