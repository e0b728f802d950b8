"""The text alignment: unit, deterministic vectors, and InfoNCE pulling each text to its item."""

import torch

from models.align import AlignConfig, TextAlignment


def test_aligned_vectors_are_unit_and_deterministic():
    torch.manual_seed(0)
    a = TextAlignment(AlignConfig(text_dim=12, dim=4, hidden=8))
    text = torch.randn(5, 12)
    out = a(text)
    assert out.shape == (5, 4) and torch.allclose(out.norm(dim=-1), torch.ones(5), atol=1e-5)
    torch.manual_seed(0)
    assert torch.equal(TextAlignment(AlignConfig(text_dim=12, dim=4, hidden=8))(text), out)


def test_infonce_pulls_each_text_to_its_own_item():
    torch.manual_seed(0)
    a = TextAlignment(AlignConfig(text_dim=16, dim=8, hidden=32, temperature=0.1))
    text, collab = torch.randn(20, 16), torch.randn(20, 8)
    before = float(a.loss(text, collab).detach())
    opt = torch.optim.Adam(a.parameters(), lr=1e-2)
    for _ in range(200):
        loss = a.loss(text, collab)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.2 * before
    sims = a(text) @ torch.nn.functional.normalize(collab, dim=-1).T
    assert (sims.argmax(1) == torch.arange(20)).float().mean() > 0.9
