"""Candidate retrieval for a large catalogue: an approximate inner-product index over the items, then
exact scores on the candidates only.

The explore side's logit of an item, without its (user, item) pair terms, is one inner product
(:meth:`models.interest.InterestModel.retrieval_items`): ``[q_e ‖ β h_u ‖ 1] · [v_i ‖ c_i ‖ a_i]``.
:class:`CandidateIndex` keeps those item vectors in a faiss IVF index (inverted lists of
k-means cells, searched in the ``nprobe`` cells nearest each query; Jégou et al., PAMI 2011,
https://doi.org/10.1109/TPAMI.2010.57), each lifted onto a sphere so that the largest inner
product is the nearest neighbour (:meth:`_Built.lift`), and returns each user's ``n_candidates``
best. The user stage
adds what the index cannot see (the user's profile items and the items their recent items lead to,
whose pair terms the index leaves out) and scores that set with the full model
(engine/fold/users.py).

Refresh policy:

- rows whose vector changed in a batch (the item stage's memory updates, popularity, new items) are
  re-added before the next batch is scored (:meth:`CandidateIndex.refresh`): a changed item is
  retrievable with its new vector from the next batch on (one whose vector outgrew the index's
  radius, below, joins every user's candidates until a rebuild it starts is swapped in);
- the k-means cells are trained once on the vectors of the build, and the rows not refreshed keep
  their vectors as indexed; as vectors drift (online learning moves every item's static part,
  popularity decays) a check every :attr:`IndexConfig.check_every_s` compares a fixed sample of rows'
  indexed vectors with their current ones (:meth:`CandidateIndex.drift`), and past
  :attr:`IndexConfig.rebuild_drift` a new index is built on a background thread from a snapshot of
  every vector and swapped in, with the rows refreshed meanwhile re-added.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["CandidateIndex", "IndexConfig", "recall_at"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexConfig:
    """The index's operating point (chosen by ``tide bench --index-recall``, docs/performance.md)."""

    min_items: int = 10_000  # catalogues smaller than this are scored exactly
    n_candidates: int = 200  # items the index returns per user
    users_per_call: int = 64  # users scored together over the union of their candidate sets
    transitions_per_user: int = 32  # a user's strongest next items (from their recent ones) that join
    tail_sample: int = 1_024  # items drawn per call to stand for the rest in the explore normaliser
    nprobe: int = 16  # IVF cells searched per query
    cells_per_sqrt: float = 1.0  # IVF cells = this × √N
    train_per_cell: int = 40  # training vectors per cell (a sample of the catalogue)
    rebuild_drift: float = 0.2  # relative change of the sampled vectors that triggers a rebuild
    drift_sample: int = 2_048
    check_every_s: float = 10.0  # seconds between two drift checks
    seed: int = 0


def _faiss():  # type: ignore[no-untyped-def]
    # its loader logs each CPU-specific build it tries and does not find at INFO
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss  # a C++ library with OpenMP threads: imported where a large catalogue needs it
    import torch

    # as many threads as torch's: the worker runs one (streams/runtime.py), and faiss's OpenMP threads
    # contending with it and the Kafka clients make a search slower, not faster
    faiss.omp_set_num_threads(torch.get_num_threads())
    return faiss


ADD_BLOCK = 65_536  # vectors lifted and added to a new index at a time


class _Built:
    """One built faiss index and what it holds: the vectors as indexed, for the drift check."""

    def __init__(self, vectors: np.ndarray, cfg: IndexConfig) -> None:
        faiss = _faiss()
        n, d = vectors.shape
        n_cells = max(1, min(n // 39, int(cfg.cells_per_sqrt * np.sqrt(n))))
        # the largest norm of the build: every vector is lifted onto the sphere of that radius
        self.radius = float(np.sqrt(np.einsum("ij,ij->i", vectors, vectors).max())) if n else 1.0
        quantizer = faiss.IndexFlatL2(d + 1)
        index = faiss.IndexIVFFlat(quantizer, d + 1, n_cells, faiss.METRIC_L2)
        rng = np.random.default_rng(cfg.seed)
        n_train = min(n, cfg.train_per_cell * n_cells)
        train = vectors[np.sort(rng.choice(n, n_train, replace=False))] if n_train < n else vectors
        index.cp.min_points_per_centroid = 1  # a sample smaller than faiss's default asks is enough here
        index.train(self.lift(train))
        for lo in range(0, n, ADD_BLOCK):  # lifted a block at a time: no second copy of the catalogue
            index.add_with_ids(self.lift(vectors[lo : lo + ADD_BLOCK]), np.arange(lo, min(n, lo + ADD_BLOCK)))
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # remove_ids by id, for updates
        index.nprobe = min(cfg.nprobe, n_cells)
        self.index = index
        self.quantizer = quantizer  # the IVF index does not own its quantizer in Python
        self.n = n
        self.n_cells = n_cells
        self.sample = np.sort(rng.choice(n, min(n, cfg.drift_sample), replace=False))
        self.sampled = vectors[self.sample].copy()  # [S, D] the sample's vectors as indexed
        self.outside: set[int] = set()  # rows refreshed to a norm past the radius: always candidates

    def lift(self, vectors: np.ndarray) -> np.ndarray:
        """``[R, D + 1]``: each vector with sqrt(r² − ‖x‖²) appended (0 past the radius r), so that
        the largest inner product with a query is the nearest lifted vector to the query with a 0
        appended (Bachrach et al., RecSys 2014, https://doi.org/10.1145/2645710.2645741): k-means
        cells in that space group what a query ranks together, where inner-product cells over
        vectors of unequal norms do not."""
        x = np.asarray(vectors, np.float32)
        extra = np.sqrt(np.maximum(self.radius**2 - np.einsum("ij,ij->i", x, x), 0.0))
        return np.ascontiguousarray(np.concatenate([x, extra[:, None].astype(np.float32)], axis=1))

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        q = np.asarray(queries, np.float32)
        padded = np.ascontiguousarray(np.concatenate([q, np.zeros((len(q), 1), np.float32)], axis=1))
        return self.index.search(padded, k)[1]

    def update(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        faiss = _faiss()
        old = np.ascontiguousarray(rows[rows < self.n], np.int64)
        if len(old):  # the hash-table direct map removes by an explicit array of ids
            self.index.remove_ids(faiss.IDSelectorArray(len(old), faiss.swig_ptr(old)))
        self.index.add_with_ids(self.lift(vectors), rows.astype(np.int64))
        self.n = max(self.n, int(rows.max()) + 1)
        past = np.einsum("ij,ij->i", vectors, vectors) > self.radius**2
        self.outside.difference_update(rows[~past].tolist())
        self.outside.update(rows[past].tolist())
        at = np.searchsorted(rows, self.sample)  # rows are sorted and unique
        hit = at < len(rows)
        hit[hit] = rows[at[hit]] == self.sample[hit]
        self.sampled[hit] = vectors[at[hit]]


class CandidateIndex:
    """Approximate top ``n_candidates`` items by inner product over the vectors that ``vectors_of``
    gives (``vectors_of(rows)`` → ``[R, D]`` of item rows ``rows``, ``vectors_of(None)`` → every item's
    ``[N, D]``), kept up to date by :meth:`refresh`.

    :meth:`refresh` and :meth:`search` are called from the thread that folds batches; a rebuild runs
    on a thread of its own and is swapped in by the next :meth:`refresh`."""

    def __init__(
        self, vectors_of: Callable[[np.ndarray | None], np.ndarray], cfg: IndexConfig | None = None
    ) -> None:
        self.cfg = cfg or IndexConfig()
        self.vectors_of = vectors_of
        self._built: _Built | None = None
        self._next: _Built | None = None  # a finished rebuild waiting to be swapped in
        self._rebuild: threading.Thread | None = None
        self._changed_since: list[np.ndarray] = []  # rows refreshed while a rebuild runs
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self.builds = 0
        self.build_seconds = 0.0
        self.last_drift = 0.0

    @property
    def rebuilding(self) -> bool:
        return self._rebuild is not None and self._rebuild.is_alive()

    def __len__(self) -> int:
        return self._built.n if self._built is not None else 0

    @property
    def n_cells(self) -> int:
        return self._built.n_cells if self._built is not None else 0

    @property
    def nprobe(self) -> int:
        return int(self._built.index.nprobe) if self._built is not None else 0

    def set_nprobe(self, nprobe: int) -> None:
        """Search ``nprobe`` cells per query from now on (at most every cell)."""
        assert self._built is not None
        self._built.index.nprobe = min(nprobe, self._built.n_cells)

    @property
    def nbytes(self) -> int:
        """Memory the index holds: the vectors and ids in its lists, the cell centres, the id map."""
        if self._built is None:
            return 0
        index = self._built.index
        return int(index.ntotal * (4 * index.d + 8 + 16) + self._built.n_cells * 4 * index.d)

    def build(self) -> None:
        """Build the index over every item's vector, here and now."""
        start = time.perf_counter()
        self._built = _Built(np.ascontiguousarray(self.vectors_of(None), np.float32), self.cfg)
        self.builds += 1
        self.build_seconds = time.perf_counter() - start
        logger.info("candidate index: %d items in %d cells, built in %.1f s",
                    self._built.n, self._built.n_cells, self.build_seconds)

    def refresh(self, rows: Sequence[int] | np.ndarray, n_items: int) -> None:
        """Re-add the item ``rows`` whose vectors changed, and any rows up to ``n_items`` that are new;
        swap in a finished rebuild; check the drift when due and start a rebuild past its bound."""
        if self._built is None:
            return
        with self._lock:
            built, self._next = self._next, None
            pending, self._changed_since = self._changed_since, []
        if built is not None:  # the rows changed while it was built are re-added below
            self._built = built
            self.builds += 1
            logger.info("candidate index rebuilt in %.1f s", self.build_seconds)
        else:
            pending = []
        new = np.arange(self._built.n, n_items, dtype=np.int64)
        todo = np.unique(np.concatenate([np.asarray(rows, np.int64), new, *pending]))
        if len(todo):
            self._built.update(todo, np.asarray(self.vectors_of(todo), np.float32))
            with self._lock:
                if self.rebuilding:
                    self._changed_since.append(todo)
        if self._built.outside and not self.rebuilding and self._next is None:
            logger.info("candidate index: %d vectors past its radius, rebuilding", len(self._built.outside))
            self.rebuild_in_background()
        elif self._due_for_check():
            self.last_drift = self.drift()
            if self.last_drift > self.cfg.rebuild_drift:
                logger.info("candidate index: drift %.2f, rebuilding", self.last_drift)
                self.rebuild_in_background()

    def search(self, queries: np.ndarray, k: int | None = None) -> np.ndarray:
        """``[B, k]`` the rows with the largest inner product with each of ``queries`` ``[B, D]``, best
        first (-1 where fewer were found)."""
        assert self._built is not None, "build the index first"
        return self._built.search(queries, k or self.cfg.n_candidates)

    def always(self) -> np.ndarray:
        """Rows every user's candidates include: those refreshed to a vector longer than the index was
        built for (its search would place them too low), until a rebuild takes them in."""
        assert self._built is not None
        return np.fromiter(self._built.outside, np.int64, len(self._built.outside))

    def drift(self) -> float:
        """The relative change ‖now − indexed‖ / ‖indexed‖ of a fixed sample of rows' vectors."""
        assert self._built is not None
        was = self._built.sampled
        now = np.asarray(self.vectors_of(self._built.sample), np.float32)
        return float(np.linalg.norm(now - was) / max(float(np.linalg.norm(was)), 1e-12))

    def _due_for_check(self) -> bool:
        now = time.monotonic()
        if self.rebuilding or self._next is not None or now - self._checked < self.cfg.check_every_s:
            return False
        self._checked = now
        return True

    def rebuild_in_background(self) -> None:
        """Build a new index on a thread from a snapshot of every vector taken now; the next
        :meth:`refresh` swaps it in and re-adds the rows refreshed meanwhile."""
        if self.rebuilding:
            return
        snapshot = np.ascontiguousarray(self.vectors_of(None), np.float32)

        def run() -> None:
            start = time.perf_counter()
            try:
                built = _Built(snapshot, self.cfg)
            except Exception:  # the current index keeps serving
                logger.exception("candidate index rebuild failed")
                return
            self.build_seconds = time.perf_counter() - start
            with self._lock:
                self._next = built

        with self._lock:
            self._changed_since = []
        self._rebuild = threading.Thread(target=run, name="candidate-index-rebuild", daemon=True)
        self._rebuild.start()

    def wait_for_rebuild(self, timeout: float | None = None) -> None:
        if self._rebuild is not None:
            self._rebuild.join(timeout)


def recall_at(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row of ``exact`` ``[B, k]`` found in the same row of ``approx`` ``[B, m]``."""
    hits = [len(set(a.tolist()) & set(e.tolist())) / max(len(e), 1) for a, e in zip(approx, exact)]
    return float(np.mean(hits)) if hits else 1.0
