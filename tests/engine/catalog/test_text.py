"""The sentence encoder: unit vectors, determinism, padding, item text and the throughput report."""

import numpy as np
import pytest
import torch

from engine.catalog.text import TextEncoder, encode_throughput, item_text, mean_pool, text_digest


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(batch_size=2)  # small batches so order restoration crosses batch boundaries


TEXTS = [
    "A long sentence about a quiet river that runs under an old stone bridge near the market.",
    "Tea.",
    "",
    "A film review of a winter story.",
    "Green garden",
]


def test_shape_dtype_and_unit_norm(encoder: TextEncoder) -> None:
    v = encoder.encode(TEXTS)
    assert encoder.dim == 384
    assert v.shape == (len(TEXTS), 384)
    assert v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_deterministic(encoder: TextEncoder) -> None:
    np.testing.assert_array_equal(encoder.encode(TEXTS), encoder.encode(TEXTS))


def test_order_preserved_across_lengths(encoder: TextEncoder) -> None:
    together = encoder.encode(TEXTS)
    one_by_one = np.concatenate([encoder.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    reversed_ = encoder.encode(TEXTS[::-1])
    np.testing.assert_allclose(reversed_[::-1], together, atol=1e-5)


def test_paraphrases_closer_than_unrelated(encoder: TextEncoder) -> None:
    a, b, c = encoder.encode(
        [
            "A man is playing the guitar on stage.",
            "Someone performs a song on a guitar at a concert.",
            "The stock market fell sharply after the interest rate decision.",
        ]
    )
    assert float(a @ b) > float(a @ c) + 0.2


def test_empty_input(encoder: TextEncoder) -> None:
    v = encoder.encode([])
    assert v.shape == (0, 384)
    assert v.dtype == np.float32


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # [1, 3, 2]
    mask = torch.tensor([[1, 1, 0]])
    assert mean_pool(hidden, mask).tolist() == [[2.0, 3.0]]
    assert mean_pool(hidden, torch.zeros(1, 3)).tolist() == [[0.0, 0.0]]


def test_item_text_and_digest() -> None:
    assert item_text(" Bridges ", "  ") == "Bridges"
    assert item_text("Bridges", "Old stone ones.") == "Bridges. Old stone ones."
    assert item_text("Why?", "Because.") == "Why? Because."
    assert len(text_digest("x")) == 8
    assert text_digest("x") == text_digest("x") != text_digest("y")


def test_throughput_report(encoder: TextEncoder) -> None:
    r = encode_throughput(encoder, n_items=6)
    assert r["items"] == 6 and r["batch_size"] == 2 and r["device"] == "cpu"
    assert r["threads"] == torch.get_num_threads()
    assert r["items_per_s"] == pytest.approx(6 / r["seconds"])  # the report's own arithmetic, not a speed
