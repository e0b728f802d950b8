"""Cold start on a synthetic catalogue whose item text carries the users' planted interests: each
user keeps to a topic and, within it, to a subtopic that only the text tells apart, and returns to
their own items at a rate of their own."""

import numpy as np
import pytest

from engine.catalog.alignment import AlignTrainConfig, fit_alignment
from engine.catalog.knowledge import Catalog
from engine.catalog.text import TextEncoder
from engine.fold.online import OnlineConfig
from engine.offline.cold_start import cold_start_split, evaluate_cold_start
from engine.offline.evaluation import evaluate_stream
from engine.offline.synthetic import catalog_log
from engine.offline.train import TrainConfig, train


@pytest.fixture(scope="module")
def world():
    cl = catalog_log(
        n_users=180, n_items=150, n_topics=6, events_per_user=30, seed=1, subtopics=3, repeat_share=(0.1, 0.7)
    )
    catalog = Catalog()
    encoder = TextEncoder()
    catalog.upsert(cl.items, encoder.encode)
    train_end = int(0.8 * len(cl.log))
    res = train(
        cl.log.slice(0, train_end),
        TrainConfig.of(
            epochs=3, min_steps=0, batch_size=100, dim=16, profile_items=8, content_dim=16,
            text_dim=encoder.dim,
        ),
    )
    report = fit_alignment(
        res.model, res.item_ids, catalog, AlignTrainConfig(steps=200), cl.log.slice(0, train_end)
    )
    return cl, catalog, res, train_end, report


def test_text_alignment_generalises_to_held_out_items(world):
    *_, report = world
    assert report.n_heldout > 0 and report.heldout_recall_at_10 > 2 * report.random_recall_at_10


def test_cold_items_rank_far_above_random_and_popularity_for_matching_users(world):
    cl, catalog, res, train_end, _ = world
    assert not set(cl.cold_items) & set(res.item_ids)  # never seen in training
    cold = set(cl.cold_items)
    rows = np.array([j for j in range(train_end, len(cl.log)) if cl.log.items[j] in cold
                     and cl.topic_of_item[cl.log.items[j]] == cl.topic_of_user[cl.log.users[j]]])
    ranks = {}
    for name, cat in [("text", catalog), ("none", None)]:
        rr = evaluate_stream(
            res.model, res.item_ids, cl.log, train_end, online=OnlineConfig(enabled=False), catalog=cat
        )
        ranks[name] = rr.ranks["model"][rows - train_end]
        pop = rr.ranks["popularity"][rows - train_end]
    n = len(catalog)
    with_text = np.median(ranks["text"]) / n
    assert with_text < 0.25  # random: 0.5; the user's topic holds a sixth of the catalogue
    assert with_text < 0.6 * np.median(ranks["none"]) / n  # unknown items rank last, then by their first uses
    assert with_text < 0.5 * np.median(pop) / n


def test_cold_start_report_compares_text_attributes_and_nothing(world):
    cl, catalog, res, train_end, _ = world
    split = cold_start_split(cl.log, train_end, share=0.2, first_n=3)
    out = evaluate_cold_start(res.model, res.item_ids, split, catalog, OnlineConfig(enabled=False))
    m = out["metrics"]
    assert set(m) == {"model", "model_without_text", "model_without_catalog", "popularity", "random"}
    assert out["rows"] == len(split.rows) > 0 and m["model"]["n"] == len(split.rows)


def test_a_new_item_enters_the_top_10_of_users_it_matches_within_its_first_interactions(world):
    cl, catalog, res, train_end, _ = world
    rr = evaluate_stream(
        res.model, res.item_ids, cl.log, train_end, online=OnlineConfig(enabled=False), catalog=catalog
    )
    ranks = rr.ranks["model"]
    cold, uses, first = set(cl.cold_items), {}, {}
    for j in range(train_end, len(cl.log)):
        item, user = cl.log.items[j], cl.log.users[j]
        if item not in cold:
            continue
        uses[item] = uses.get(item, 0) + 1
        # among the item's first five uses, by a user whose topic and subtopic it has
        ours = cl.topic_of_item[item] == cl.topic_of_user[user]
        ours &= cl.subtopic_of_item[item] == cl.subtopic_of_user[user]
        if uses[item] <= 5 and ours:
            first.setdefault(item, []).append(ranks[j - train_end])
    assert len(first) >= 20
    in_top = [min(r) <= 10 for r in first.values()]
    assert np.mean(in_top) >= 0.25  # a quarter of the new items reach a matching user's top 10 at once
    hits = np.concatenate([np.asarray(r) for r in first.values()]) <= 10
    assert hits.mean() >= 1.2 * 10 / len(catalog)
