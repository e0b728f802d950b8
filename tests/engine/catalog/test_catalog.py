"""The catalogue's items: typed attributes, text encoded only when it changes, knowledge vectors of cold
items."""

import numpy as np
import pytest
import torch

from engine.catalog.knowledge import Catalog, attribute_values, knowledge_vectors
from schemas import Item


def test_attribute_values_are_typed_and_lists_expand():
    assert attribute_values({"Genre": "Jazz", "tags": ["a", "b", ""], "year": 1999, "x": " "}) == (
        "genre=jazz", "tags=a", "tags=b", "year=1999",
    )


def test_text_is_encoded_once_and_again_only_when_it_changes():
    calls: list[list[str]] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        return np.ones((len(texts), 3), np.float32)

    cat = Catalog()
    assert cat.upsert([Item("a", "A", "x"), Item("b", "B", "y")], encode) == ["a", "b"]
    assert cat.upsert([Item("a", "A", "x"), Item("b", "B", "y", {"genre": "jazz"})], encode) == ["b"]
    assert cat.upsert([Item("a", "A", "changed")], encode) == ["a"]
    assert calls == [["A. x", "B. y"], ["A. changed"]]  # attributes alone never re-encode
    text, has = cat.text_matrix(["a", "zz"], 3)
    assert has.tolist() == [True, False] and not text[1].any()


def test_knowledge_of_a_cold_item_comes_from_its_text_and_its_attributes_neighbours():
    collab = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])  # items 2, 3: never used
    counts = torch.tensor([5.0, 5.0, 0.0, 0.0])
    rows, attrs = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1])  # item 2 shares attribute 1 with item 1
    aligned = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    has_text = torch.tensor([False, False, False, True])
    k = knowledge_vectors(aligned, has_text, (rows, attrs, 2), collab, counts)
    assert torch.allclose(k[2], torch.tensor([0.0, 1.0]))  # its attribute's used item
    assert torch.allclose(k[3], torch.tensor([1.0, 0.0]))  # its text
    assert torch.allclose(k[0], torch.tensor([1.0, 0.0]))
    both = knowledge_vectors(
        aligned[[3]].repeat(4, 1), torch.ones(4, dtype=torch.bool), (rows, attrs, 2), collab, counts
    )
    assert both[2] == pytest.approx(torch.tensor([0.7071, 0.7071]), abs=1e-3)  # half text, half attribute
