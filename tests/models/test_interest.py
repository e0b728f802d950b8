"""The interest model: memory updates, pair features and the scores' shape."""

import pytest
import torch

from models.interest import InterestConfig, InterestModel
from models.memory import MemoryConfig, TemporalMemory


def test_memory_update_shapes_and_determinism():
    torch.manual_seed(1)
    mem = TemporalMemory(MemoryConfig(dim=8, time_dim=4))
    args = (
        torch.zeros(5, 8),
        torch.randn(5, 8),
        torch.tensor([0.0, 1, 10, 1e6, -3]),
        torch.zeros(5, dtype=torch.long),
        torch.ones(5),
    )
    out = mem.update_users(*args)
    assert out.shape == (5, 8) and torch.isfinite(out).all()
    torch.manual_seed(1)
    again = TemporalMemory(MemoryConfig(dim=8, time_dim=4)).update_users(*args)
    assert torch.equal(out, again)
    assert mem.update_items(*args).shape == (5, 8)


def test_pair_features_list_profile_and_transition_pairs_once():
    m = InterestModel(InterestConfig(n_items=4, dim=8, profile_items=3, n_profile_features=2))
    rows = torch.tensor([[2, 1, -1], [-1, -1, -1]])
    feats = torch.tensor([[[1.0, 0.5], [0.25, 2.0], [9.0, 9.0]], [[7.0, 7.0], [0.0, 0.0], [0.0, 0.0]]])
    # transitions of user 0 to items 3 and 2 (2 is also in the profile)
    trans = (torch.tensor([0, 0]), torch.tensor([3, 2]), torch.tensor([[1.0, 0.5, 0.0], [2.0, 0.5, 0.0]]))
    users, items, x, at = m.pair_features(rows, feats, trans, torch.tensor([0.0, 5.0]), 4)
    pairs = {(u, i): row for u, i, row in zip(users.tolist(), items.tolist(), x.tolist())}
    # the valid profile slots, row-major (user 0's items 2 and 1), name their pairs
    assert [(users[k].item(), items[k].item()) for k in at.tolist()] == [(0, 2), (0, 1)]
    assert set(pairs) == {(0, 1), (0, 2), (0, 3)}  # empty profile slots and user 1 add nothing
    assert pairs[(0, 2)][:5] == [1.0, 0.5, 2.0, 0.5, 0.0] and pairs[(0, 1)][:5] == [0.25, 2.0, 0.0, 0.0, 0.0]
    assert pairs[(0, 3)][:5] == [0.0, 0.0, 1.0, 0.5, 0.0]


def _score(m, rows):
    feats = torch.ones(*rows.shape, m.cfg.n_profile_features)
    with torch.no_grad():
        vecs = m.item_vectors(m.item_static.weight, torch.zeros(6, 8))
        hist = torch.zeros(2, 3, 8)
        gap = torch.tensor([5.0, 0.0])
        q = m.query(
            torch.zeros(2, 8),
            torch.zeros(2, 8),
            hist,
            torch.ones(2, 3),
            torch.zeros(2, 3, dtype=torch.long),
            torch.zeros(2, 3, dtype=torch.bool),
            gap,
        )
        none = (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0, 3))
        return m.scores(q, vecs, m.item_bias, rows, feats, none, torch.zeros(6, 2), gap)


def test_scores_shape_and_unrelated_items_get_no_pair_term():
    torch.manual_seed(0)
    m = InterestModel(InterestConfig(n_items=6, dim=8, profile_items=4)).eval()
    s0 = _score(m, torch.full((2, 4), -1))
    s1 = _score(m, torch.tensor([[3, -1, -1, -1], [-1, -1, -1, -1]]))
    assert s0.shape == (2, 6)
    assert s1[0, 3] != s0[0, 3] and torch.equal(s1[1], s0[1]) and torch.equal(s1[0, :3], s0[0, :3])


@pytest.mark.parametrize("dim", [16, 64])
def test_a_model_without_graph_snapshots_starts_as_one_with_them(dim):
    """Without the item-graph snapshot model (and torch_geometric), a seed still gives the model it gave
    with it: every other parameter, and the generator's state after."""
    models = {}
    for on in (True, False):
        torch.manual_seed(7)
        models[on] = InterestModel(InterestConfig(n_items=30, dim=dim, use_graph_snapshots=on))
        models[on] = (models[on], torch.get_rng_state())
    (with_graph, rng_with), (without, rng_without) = models[True], models[False]
    assert without.graph_model is None and with_graph.graph_model is not None
    shared = without.state_dict()
    assert set(shared) == {k for k in with_graph.state_dict() if not k.startswith("graph_model.")}
    for k, v in with_graph.state_dict().items():
        if k in shared:
            assert torch.equal(v, shared[k]), k
    assert torch.equal(rng_with, rng_without)


def test_time_encoding_is_pygs_time_encoder():
    from torch_geometric.nn.models.tgn import TimeEncoder

    from models.memory import TimeEncoding

    torch.manual_seed(3)
    ours = TimeEncoding(8)
    torch.manual_seed(3)
    pyg = TimeEncoder(8)
    assert ours.state_dict().keys() == pyg.state_dict().keys()
    x = torch.linspace(0, 12, 20)
    assert torch.equal(ours(x), pyg(x))


def test_a_checkpoint_with_snapshot_weights_loads_into_a_model_without_them(tmp_path):
    from dataclasses import asdict

    from engine.checkpoint import load_checkpoint, save_checkpoint

    model = InterestModel(InterestConfig(n_items=4, dim=8, use_graph_snapshots=True))
    path = save_checkpoint(tmp_path, model, ["a", "b", "c", "d"], {})
    payload = torch.load(path, weights_only=False)
    payload["config"] = asdict(InterestConfig(**payload["config"])) | {"use_graph_snapshots": False}
    torch.save(payload, path)
    loaded = load_checkpoint(path).model
    assert loaded.graph_model is None
    assert torch.equal(loaded.item_static.weight, model.item_static.weight)
