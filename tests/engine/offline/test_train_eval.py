"""Training, checkpoints, protocols, the streaming evaluator and its baselines."""

import numpy as np
import pytest
import torch

from engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from engine.fold.context import log_contexts
from engine.fold.online import OnlineConfig
from engine.offline.baselines import LastItemTransitions, Popularity, RecencyFrequency, default_baselines
from engine.offline.data import read_csv
from engine.offline.evaluation import evaluate_stream, next_items, ranking_metrics, summarize
from engine.offline.train import TrainConfig, train

CFG = TrainConfig.of(min_steps=0, epochs=2, batch_size=50, dim=16, profile_items=5)


def test_protocol_splits(log):
    from engine.offline.protocols import split_log

    j = split_log(log, "jodie")
    assert (j.train_end, j.val_end, j.n) == (480, 540, 600)
    t = split_log(log, "tgb")
    assert log.ts[t.train_end - 1] <= np.quantile(log.ts, 0.7) < log.ts[t.train_end]
    assert t.part(0) == "train" and t.part(599) == "test"


def test_training_is_deterministic_and_learns(log):
    a = train(log, CFG)
    b = train(log, CFG)
    assert a.losses == b.losses
    assert a.losses[-1] < a.losses[0]
    assert a.model.cfg.n_items == len(set(log.items))


def test_checkpoint_rebuilds_its_model(log, tmp_path):
    res = train(log, TrainConfig.of(min_steps=0, epochs=1, batch_size=100, dim=8, profile_items=5))
    path = save_checkpoint(tmp_path, res.model, res.item_ids, res.meta(CFG))
    assert latest_checkpoint(tmp_path) == path
    ck = load_checkpoint(path)
    assert ck.item_ids == res.item_ids and ck.version in path.name
    for k, v in res.model.state_dict().items():
        assert torch.equal(v, ck.model.state_dict()[k])


@pytest.mark.parametrize("online", [False, True])
def test_evaluation_ranks_every_scored_row_and_beats_popularity(log, online):
    res = train(log, TrainConfig.of(min_steps=0, epochs=3, batch_size=50, dim=16, profile_items=5))
    rr = evaluate_stream(
        res.model,
        res.item_ids,
        log,
        400,
        batch_size=64,
        online=OnlineConfig(enabled=online, examples_per_step=20),
    )
    assert len(rr.rows) == 200 and all(not np.isnan(r).any() for r in rr.ranks.values())
    assert set(rr.ranks) == {"model", *default_baselines()}
    s = summarize(rr, np.ones(200, bool))
    assert s["model"]["repeat"]["n"] + s["model"]["first_time"]["n"] == 200
    assert s["model"]["recall@10"] > s["popularity"]["recall@10"]
    assert (rr.extra["online_steps"] > 0) == online


def test_ranking_metrics_exact():
    m = ranking_metrics([1, 2, 20])
    assert m["mrr"] == pytest.approx((1 + 0.5 + 0.05) / 3)
    assert m["recall@10"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / np.log2(3)) / 3)


def test_recency_frequency_and_popularity_ranks():
    rf = RecencyFrequency(0.5)
    for item in ["a", "b", "a", "c"]:
        rf.observe("u", item)
    # scores: c=1, a=0.5+0.125=0.625, b=0.25; 10 items in all, 7 unseen tied at 0
    assert rf.rank("u", "c", 10) == 1
    assert rf.rank("u", "a", 10) == 2
    assert rf.rank("u", "z", 10) == 4 + 0.5 * 6
    tr = LastItemTransitions()
    for user, item in [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("b", "x"), ("c", "x")]:
        tr.observe(user, item)
    # x → y twice, y → x once; user c's last item is x
    assert tr.rank("c", "y", 5) == 1 and tr.rank("c", "x", 5) == 2 + 0.5 * 3
    pop = Popularity()
    for item in ["a", "a", "b"]:
        pop.observe("u", item)
    assert pop.rank("u", "a", 5) == 1 and pop.rank("u", "z", 5) == 3 + 0.5 * 2


def test_next_items_and_histories():
    users = np.array(["u", "v", "u", "u"], dtype=object)
    items = np.array(["a", "b", "c", "a"], dtype=object)
    nxt, idx = next_items(users.tolist(), items.tolist())
    assert nxt == ["c", None, "a", None] and idx.tolist() == [2, -1, 3, -1]
    ctx = log_contexts(
        np.array([0, 1, 0, 0, 0]),
        np.array([5, 6, 7, 5, 8]),
        np.array([1.0, 2, 4, 9, 10]),
        np.zeros(5, np.int64),
        2,
        3,
    )
    assert ctx.prof_rows.tolist() == [[-1, -1], [-1, -1], [5, -1], [7, 5], [5, 7]]
    assert ctx.last_rows.tolist() == [-1, -1, 5, 7, 5]
    assert ctx.hist_rows.tolist() == [[-1] * 3, [-1] * 3, [5, -1, -1], [7, 5, -1], [5, 7, 5]]
    # at each event's own time: event 4 (t=10) comes 1 s after the user's last event (t=9)
    assert ctx.gap.tolist() == [0, 0, 3, 5, 1] and ctx.hist_ages[4].tolist() == [1, 6, 9]
    feats = ctx.prof_feats
    # before the last event: item 5 used at events 1 and 3 (acc 0.5 = 1 + 0.5^2), now; item 7 one event ago
    assert feats[4, 0, 0] == 1.25 and feats[4, 1, 0] == 0.5 and feats[4, 0, 2] == np.float32(np.log1p(2))
    assert feats[4, 0, 3] == np.float32(1 / (1 + np.log1p(1.0) / 10))  # last used 1 s before the query time


def test_read_csv_with_and_without_header(tmp_path):
    (tmp_path / "h.csv").write_text("u,i,ts,label\n1,10,5.0,0\n2,11,1.0,1\n")
    (tmp_path / "n.csv").write_text("1,10,5.0,purchase\n2,11,1.0,view\n")
    a = read_csv(tmp_path / "h.csv")
    assert a.users.tolist() == ["2", "1"] and a.ts.tolist() == [1.0, 5.0] and a.event_types.tolist() == [0, 0]
    b = read_csv(tmp_path / "n.csv")
    assert b.event_types.tolist() == [0, 5]


def test_offline_evaluation_carries_state_across_batches(log):
    """With a scorer that is exactly recency-frequency (0.5), the streamed evaluation reproduces the
    baseline's ranks row for row: state, profiles and ranking carry over between batches."""
    from models.interest import InterestConfig, InterestModel

    ids = sorted(set(log.items.tolist()))
    m = InterestModel(
        InterestConfig(
            n_items=len(ids), dim=8, profile_items=64, use_memory=False, use_item_bias=False,
            use_mixture=False,
        )
    )

    class FirstFeature(torch.nn.Module):
        def forward(self, x):
            return x[..., :1]

    m.pair_mlp = FirstFeature()
    torch.nn.init.zeros_(m.trend.weight)
    rr = evaluate_stream(m.eval(), ids, log, 300, batch_size=37, online=OnlineConfig(enabled=False))
    assert np.allclose(rr.ranks["model"], rr.ranks["recency_frequency"])


def test_event_types_are_weighted_and_predicted_jointly():
    from schemas import EVENT_TYPES
    from tests.engine.conftest import tiny_log

    log = tiny_log(n_events=300)
    rng = np.random.default_rng(0)
    types = rng.choice(
        [EVENT_TYPES.index("view"), EVENT_TYPES.index("purchase")], size=len(log), p=[0.8, 0.2]
    )
    log = type(log)(log.users, log.items, log.ts, types)
    cfg = TrainConfig.of(
        min_steps=0, epochs=2, batch_size=50, dim=8, profile_items=5, event_weights={"purchase": 3.0}
    )
    res = train(log, cfg)
    assert np.isfinite(res.losses).all()
    with pytest.raises(ValueError, match="unknown event types"):
        train(log, TrainConfig(epochs=1, min_steps=0, event_weights={"buy": 2.0}))


def test_a_small_log_takes_more_passes_unless_told_exactly():
    cfg = TrainConfig()  # 2 passes, at least 400 steps of 200 rows
    assert cfg.passes(125_979) == 2 and cfg.passes(16_000) == 5 and cfg.passes(10) == 400
    assert cfg.with_epochs(3).passes(16_000) == 3 and cfg.with_epochs(None) is cfg
