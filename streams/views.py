"""What the query API answers (schemas/openapi.json): ``/health``, ``/ready``, ``/users/{id}``,
``/users/{id}/recommendations``, ``/users/{id}/trajectory`` and ``/items/{id}/similar``, as coroutines
that return (HTTP status, JSON body); streams/app.py serves them through Faust.

Any worker answers for any user: a user this worker does not hold is asked of the workers that hold
partitions (streams/fleet.py), with :data:`FORWARDED` set so that they answer from their own state
only; the first that has the user answers, naming itself in ``served_by``.

Bad requests get a 4xx and change nothing. A lookup reads only the partitions this worker holds and
never opens a store. ``/health`` never waits for the engine. A recommendation request takes the
engine's lock, which the hot path holds while it folds, so it is scored on one thread of its own:
the event loop (and with it ``/health`` and ``/metrics``) never waits for the lock, requests take
the lock one at a time, in turn with the hot path (a fair lock, streams/runtime.py), and beyond
:data:`MAX_PENDING` waiting requests the next are turned away with 503.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp

from engine.fold.drift import trajectory
from engine.fold.similar import similar_items
from engine.fold.users import user_partition_name
from engine.state.codec import UserState, decode_user
from schemas import EVENT_TYPES, SchemaError, check_id
from streams.config import Settings
from streams.fleet import Directory, Member, advertised_url
from streams.runtime import Engine
from streams.worker import Worker

__all__ = ["FORWARDED", "MAX_AT_AHEAD_S", "MAX_K", "MAX_PENDING", "PEER_TIMEOUT_S", "Views"]

logger = logging.getLogger(__name__)

MAX_K = 1000  # items a request may ask for
MAX_AT_AHEAD_S = 10 * 365 * 86_400.0  # how far past the clock ``at`` may be
MAX_PENDING = 32  # recommendation requests waiting for the engine before the next get 503
FORWARDED = "X-Tide-Forwarded"  # a request sent on by another worker: answer from this worker's state
PEER_TIMEOUT_S = 2.0

Answer = tuple[int, dict[str, Any]]


class Views:
    def __init__(
        self, settings: Settings, engine: Engine, worker: Worker, directory: Directory | None = None
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.worker = worker
        self.directory = directory
        self.url = advertised_url(settings)
        self._scorer = ThreadPoolExecutor(1, thread_name_prefix="tide-web-score")
        self._session: aiohttp.ClientSession | None = None
        self.pending = 0

    async def health(self) -> Answer:
        """Liveness: 200 unless the hot path failed, stalled or lost the broker."""
        h = self.worker.health()
        h |= {"model_version": self.engine.users.model_version, "device": str(self.engine.device)}
        return (200 if h["status"] == "ok" else 503), h

    async def ready(self) -> Answer:
        """Readiness: 200 once the worker holds restored partitions and is healthy."""
        h = self.worker.health()
        ready = h["status"] == "ok" and h["assigned"]
        body = {"ready": ready, "status": h["status"], "partitions": sorted(self.worker.owned)}
        return (200 if ready else 503), body | {"url": self.url}

    async def routed(self, local: Answer, path_qs: str, forwarded: bool) -> Answer:
        """``local`` (this worker's answer), or, when it does not hold the user and the request was not
        forwarded, the answer of the worker that does."""
        status, body = local
        if status != 404 or forwarded or self.directory is None:
            return local
        peers = self.directory.peers()
        if not peers:
            return local
        answers = await asyncio.gather(*(self._ask(p, path_qs) for p in peers))
        found = [a for a in answers if a is not None and a[0] != 404]
        if found:
            return found[0]
        unreachable = [p.url for p, a in zip(peers, answers) if a is None]
        return 404, body | {"workers_asked": len(peers) + 1, "unreachable": unreachable}

    async def _ask(self, peer: Member, path_qs: str) -> Answer | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT_S))
        try:
            async with self._session.get(peer.url + path_qs, headers={FORWARDED: "1"}) as r:
                return r.status, await r.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            logger.warning("worker %s did not answer a forwarded request: %s", peer.url, type(exc).__name__)
            return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def user(self, user_id: str) -> Answer:
        if (bad := _bad_user_id(user_id)) is not None:
            return 400, {"error": bad}
        found = self._find(user_id)
        if found is None:
            return 404, {"error": "unknown user"}
        p, s = found
        return 200, {
            "user_id": user_id,
            "served_by": self.url,
            "partition": p,
            "last_applied_offset": s.offset,
            "last_event_time": s.last_t,
            "model_version": s.model_version,
            "recent_items": s.hist_items,
            "interest_norm": float((s.memory**2).sum() ** 0.5),
        }

    async def recommendations(self, user_id: str, query: Mapping[str, str]) -> Answer:
        """Fresh recommendations for a user at ``?at=`` (epoch s, default now) and ``?k=`` (1 to
        1,000, default the worker's top-k): the stored interest projected to that time (the pushed
        recommendation is for the moment of the user's last event)."""
        if (bad := _bad_user_id(user_id)) is not None:
            return 400, {"error": bad}
        try:
            at, k = _query(query, self.settings.top_k)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        found = self._find(user_id)
        if found is None:
            return 404, {"error": "unknown user"}
        if self.pending >= MAX_PENDING:
            return 503, {"error": "busy: too many recommendation requests waiting"}
        engine, state = self.engine, found[1]

        def score() -> list[Any]:
            with engine.lock:  # the hot path folds under the same lock
                return engine.users.recommend(state, at, k)

        self.pending += 1
        try:
            items = await asyncio.get_running_loop().run_in_executor(self._scorer, score)
        finally:
            self.pending -= 1
        return 200, {
            "user_id": user_id,
            "served_by": self.url,
            "at": at,
            "model_version": engine.users.model_version,
            "items": [
                {"item_id": i.item_id, "score": i.score, "reason": i.reason, "evidence": i.evidence}
                for i in items
            ],
        }

    async def trajectory(self, user_id: str) -> Answer:
        """The user's recent interest after each of their last events, oldest first, and their drift
        distance now (engine/fold/drift.py)."""
        if (bad := _bad_user_id(user_id)) is not None:
            return 400, {"error": bad}
        found = self._find(user_id)
        if found is None:
            return 404, {"error": "unknown user"}
        points = trajectory(found[1])
        return 200, {
            "user_id": user_id,
            "served_by": self.url,
            "drift_threshold": self.settings.drift_threshold,
            "points": [
                {"time": p.time, "item_id": p.item_id, "event_type": EVENT_TYPES[p.event_type],
                 "interest": list(p.interest), "distance": round(p.distance, 4)}
                for p in points
            ],
        }

    async def similar(self, item_id: str, query: Mapping[str, str]) -> Answer:
        """Items nearest to an item (``?k=``, default the worker's top-k), each with why."""
        try:
            check_id(item_id, "item_id")
            k = _k(query, self.settings.top_k)
        except (SchemaError, ValueError) as exc:
            return 400, {"error": str(exc)}
        engine = self.engine

        def nearest() -> Any:
            with engine.lock:
                return similar_items(engine.users.table, item_id, k)

        items = await asyncio.get_running_loop().run_in_executor(self._scorer, nearest)
        if items is None:
            return 404, {"error": "unknown item"}
        return 200, {
            "item_id": item_id,
            "items": [
                {"item_id": i.item_id, "cosine": i.cosine, "reason": i.reason,
                 "shared_attributes": list(i.shared_attributes)}
                for i in items
            ],
        }

    def _find(self, user_id: str) -> tuple[int, UserState] | None:
        """The user's state in the partitions this worker holds now (it opens no store; a partition
        that moved to another worker stays on disk here as a checkpoint, and is not read)."""
        key = user_id.encode("utf-8")
        store = self.engine.store
        for p in sorted(self.worker.owned):
            name = user_partition_name(p)
            if name not in store.open_partitions(name):
                continue
            raw = store.partition(name).get(key)
            if raw is not None:
                return p, decode_user(raw)
        return None


def _bad_user_id(user_id: str) -> str | None:
    """Why ``user_id`` cannot be a user id (the rules of the input contract), or None."""
    try:
        check_id(user_id, "user_id")
    except SchemaError as exc:
        return str(exc)
    return None


def _query(query: Mapping[str, str], default_k: int) -> tuple[float, int]:
    """``at`` (epoch s: finite, not negative, at most ten years ahead; default now) and ``k`` (1 to
    :data:`MAX_K`) of a recommendations request; ValueError says what is wrong."""
    now = time.time()
    try:
        at = float(query.get("at", now))
    except ValueError:
        raise ValueError("at must be a number: epoch seconds") from None
    if not math.isfinite(at) or at < 0 or at > now + MAX_AT_AHEAD_S:
        raise ValueError("at must be finite epoch seconds, not negative and at most ten years ahead")
    return at, _k(query, default_k)


def _k(query: Mapping[str, str], default_k: int) -> int:
    """``k`` of a request: 1 to :data:`MAX_K`; ValueError otherwise."""
    raw_k = query.get("k", str(default_k))
    if not (raw_k.isascii() and raw_k.isdigit() and len(raw_k) <= 4 and 1 <= int(raw_k) <= MAX_K):
        raise ValueError(f"k must be an integer from 1 to {MAX_K}")
    return int(raw_k)
