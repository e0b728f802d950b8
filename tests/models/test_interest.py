import torch

from models.interest import InterestConfig, InterestModel
from models.memory import MemoryConfig, TemporalMemory


def test_memory_update_shapes_and_determinism():
    torch.manual_seed(1)
    mem = TemporalMemory(MemoryConfig(dim=8, time_dim=4))
    args = (torch.zeros(5, 8), torch.randn(5, 8), torch.tensor([0.0, 1, 10, 1e6, -3]), torch.zeros(5, dtype=torch.long), torch.ones(5))
    out = mem.update_users(*args)
    assert out.shape == (5, 8) and torch.isfinite(out).all()
    torch.manual_seed(1)
    again = TemporalMemory(MemoryConfig(dim=8, time_dim=4)).update_users(*args)
    assert torch.equal(out, again)
    assert mem.update_items(*args).shape == (5, 8)


def test_pair_features_count_history_with_decay():
    m = InterestModel(InterestConfig(n_items=4, dim=8, history=3, decays=(0.5,)))
    h = torch.tensor([[2, 1, 2], [-1, -1, -1]])
    ages = torch.tensor([[0.0, 10.0, 100.0], [0.0, 0.0, 0.0]])
    trans = torch.zeros(2, 4, 2)
    trans[0, 3, 0] = 1.0
    f = m.pair_features(h, ages, trans, 4)
    assert f.shape == (2, 4, 5)
    assert torch.allclose(f[0, :, 0], torch.tensor([0.0, 0.5, 1.25, 0.0]))
    assert torch.allclose(f[0, :, 1], torch.log1p(torch.tensor([0.0, 1.0, 2.0, 0.0])))
    assert f[0, 2, 2] == 1.0 and 0 < f[0, 1, 2] < 1 and f[0, 0, 2] == 0  # recency in time
    assert f[0, 3, 3] == 1.0
    assert torch.count_nonzero(f[1]) == 0


def _score(m, hist):
    with torch.no_grad():
        vecs = m.item_vectors(m.item_static.weight, torch.zeros(6, 8))
        q = m.query(torch.zeros(2, 8), torch.zeros(2, 8))
        return m.scores(q, vecs, m.item_bias, hist, torch.zeros_like(hist, dtype=torch.float), torch.zeros(2, 6, 2), torch.zeros(6, 2))


def test_scores_shape_and_unrelated_items_get_no_pair_term():
    torch.manual_seed(0)
    m = InterestModel(InterestConfig(n_items=6, dim=8, history=4)).eval()
    s0 = _score(m, torch.full((2, 4), -1))
    s1 = _score(m, torch.tensor([[3, -1, -1, -1], [-1, -1, -1, -1]]))
    assert s0.shape == (2, 6)
    assert s1[0, 3] != s0[0, 3] and torch.equal(s1[1], s0[1]) and torch.equal(s1[0, :3], s0[0, :3])
