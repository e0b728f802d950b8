"""The sequence model, the time projection and the item-graph snapshot model."""

import torch

from models.graph_context import GraphSnapshotModel
from models.interest import InterestConfig, InterestModel
from models.sequence import SequenceConfig, SequenceEncoder


def _inputs(b=3, L=4, d=8):
    g = torch.Generator().manual_seed(0)
    vecs = torch.randn(b, L, d, generator=g)
    ages = torch.tensor([[1.0, 60, 3600, 86400]] * b)
    types = torch.zeros(b, L, dtype=torch.long)
    valid = torch.tensor([[True, True, True, False], [True, False, False, False], [False] * 4])
    return vecs, ages, types, valid


def test_sequence_encoder_shapes_masking_and_determinism():
    torch.manual_seed(0)
    enc = SequenceEncoder(SequenceConfig(dim=8, time_dim=4)).eval()
    vecs, ages, types, valid = _inputs()
    z = enc(vecs, ages, types, valid)
    assert z.shape == (3, 8) and torch.isfinite(z).all()
    assert z[2].abs().sum() == 0  # a user with no events
    # what sits in a padded slot does not matter
    other = vecs.clone()
    other[0, 3] = 100.0
    other[1, 1:] = -7.0
    assert torch.allclose(enc(other, ages, types, valid)[:2], z[:2], atol=1e-6)
    torch.manual_seed(0)
    assert torch.equal(SequenceEncoder(SequenceConfig(dim=8, time_dim=4)).eval()(vecs, ages, types, valid), z)


def test_sequence_encoder_reads_time_intervals():
    torch.manual_seed(0)
    enc = SequenceEncoder(SequenceConfig(dim=8, time_dim=4)).eval()
    vecs, ages, types, valid = _inputs()
    assert not torch.allclose(enc(vecs, ages * 1000, types, valid)[0], enc(vecs, ages, types, valid)[0])


def test_time_projection_starts_as_identity_and_then_depends_on_the_gap():
    torch.manual_seed(0)
    m = InterestModel(InterestConfig(n_items=5, dim=8, time_dim=4)).eval()
    vecs, ages, types, valid = _inputs()
    args = (torch.randn(3, 8), torch.randn(3, 8), vecs, ages, types, valid)
    with torch.no_grad():
        a = m.query(*args, torch.zeros(3))
        b = m.query(*args, torch.full((3,), 86400.0))
        assert torch.equal(a, b)
        torch.nn.init.normal_(m.projection.weight)
        assert not torch.allclose(m.query(*args, torch.zeros(3)), m.query(*args, torch.full((3,), 86400.0)))


def test_graph_snapshot_model_mixes_neighbours_only():
    torch.manual_seed(0)
    g = GraphSnapshotModel(8).eval()
    x, h = torch.randn(4, 8), torch.zeros(4, 8)
    edges = torch.tensor([[0, 1], [1, 0]])
    out = g(x, edges, torch.ones(2), h)
    assert out.shape == (4, 8)
    x2 = x.clone()
    x2[0] += 1.0
    out2 = g(x2, edges, torch.ones(2), h)
    assert not torch.allclose(out2[1], out[1])  # item 1 hears its neighbour
    assert torch.allclose(out2[2:], out[2:])  # items 2, 3 have no edges
