"""Chronological evaluation protocols: where training, validation and test begin in a log.

- ``jodie``: split by row index, 80 / 10 / 10 (Kumar et al., KDD 2019).
- ``tgb``: split by time at the 70% and 85% quantiles of the timestamps, so no timestamp straddles
  two parts (the Temporal Graph Benchmark's ``tgbl-*`` link-prediction splits).

Both rank the true item among all items with ties counted half, and keep state updating with every
row through validation and test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from engine.offline.data import InteractionLog

__all__ = ["Protocol", "Split", "split_log"]

Protocol = Literal["jodie", "tgb"]


@dataclass(frozen=True)
class Split:
    protocol: str
    train_end: int  # rows [0, train_end) train
    val_end: int  # rows [train_end, val_end) validation, [val_end, n) test
    n: int

    def part(self, row: int) -> str:
        return "train" if row < self.train_end else "val" if row < self.val_end else "test"


def split_log(log: InteractionLog, protocol: Protocol) -> Split:
    n = len(log)
    if protocol == "jodie":
        return Split(protocol, int(n * 0.8), int(n * 0.9), n)
    if protocol == "tgb":
        a, b = np.quantile(log.ts, [0.70, 0.85])
        return Split(
            protocol, int(np.searchsorted(log.ts, a, "right")), int(np.searchsorted(log.ts, b, "right")), n
        )
    raise ValueError(f"unknown protocol {protocol!r}; use 'jodie' or 'tgb'")
