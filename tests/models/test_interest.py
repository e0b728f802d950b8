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


def test_repeat_features_count_history_with_decay():
    m = InterestModel(InterestConfig(n_items=4, dim=8, history=3, repeat_decay=0.5))
    h = torch.tensor([[2, 1, 2], [-1, -1, -1]])
    f = m.repeat_features(h, 4)
    assert f.shape == (2, 4, 2)
    assert torch.allclose(f[0, :, 0], torch.tensor([0.0, 0.5, 1.25, 0.0]))
    assert torch.allclose(f[0, :, 1], torch.tensor([0.0, 1.0, 2.0, 0.0]))
    assert torch.count_nonzero(f[1]) == 0


def test_scores_shape_and_repeat_term_raises_history_items():
    torch.manual_seed(0)
    m = InterestModel(InterestConfig(n_items=6, dim=8, history=4)).eval()
    with torch.no_grad():
        vecs = m.item_vectors(m.item_static.weight, torch.zeros(6, 8))
        q = m.query(torch.zeros(2, 8), torch.zeros(2, 8))
        s0 = m.scores(q, vecs, m.item_bias, torch.full((2, 4), -1))
        s1 = m.scores(q, vecs, m.item_bias, torch.tensor([[3, -1, -1, -1], [-1, -1, -1, -1]]))
    assert s0.shape == (2, 6)
    assert s1[0, 3] > s0[0, 3] and torch.equal(s1[1], s0[1])
