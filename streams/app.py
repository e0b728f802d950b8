"""The worker process: a Faust app for the topology, web views and lifecycle, with the hot path on
confluent-kafka.

Faust declares the topics, serves ``/health``, ``/metrics`` (Prometheus), ``/users/{id}`` (a user's
state) and ``/users/{id}/recommendations`` (fresh, projected to now), and starts and stops the hot
path as a service. The volume goes through
:class:`streams.worker.Worker` (confluent-kafka) in a thread of its own: on the embedded broker a
Faust agent alone consumed about 10,000 events/s and 4,000–5,000 with one send per event, while a
confluent-kafka loop moves about 62,000 (DESIGN.md, "Measured constraints").
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import faust
import mode
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from engine.codec import decode_user
from engine.fold import user_partition_name
from streams.config import Settings
from streams.metrics import Metrics
from streams.runtime import Engine, load_engine
from streams.worker import Worker

__all__ = ["build_app", "run_worker"]

logger = logging.getLogger(__name__)


def build_app(settings: Settings, engine: Engine, registry: CollectorRegistry) -> tuple[faust.App, Worker]:
    metrics = Metrics(
        registry, topics=[settings.topics.interactions, settings.topics.items], partitions=range(settings.partitions)
    )
    metrics.set_model(engine.checkpoint.version)
    worker = Worker(settings, engine, metrics)
    app = faust.App(
        f"{settings.app_id}-control",
        broker=[f"kafka://{h}" for h in settings.bootstrap_servers.split(",")],
        store="memory://",
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        topic_partitions=settings.partitions,
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_ms / 6000),
        datadir=str(settings.state_dir / "faust"),
        topic_allow_declare=True,
    )
    _declare_topics(app, settings)

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        stats = worker.stats
        return web.json(
            {
                "status": "ok",
                "assigned": worker.ready.is_set(),
                "model_version": engine.checkpoint.version,
                "device": str(engine.device),
                "consumed": stats.consumed,
                "folded": stats.folded,
                "skipped": stats.skipped,
                "dead_letters": stats.dead_letters,
                "recommendations": stats.recommendations,
            }
        )

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/users/{user_id}")
    async def user_state(web: Any, request: Any, user_id: str) -> Any:
        for p in range(settings.partitions):
            raw = engine.store.partition(user_partition_name(p)).get(user_id.encode("utf-8"))
            if raw is not None:
                s = decode_user(raw)
                return web.json(
                    {
                        "user_id": user_id,
                        "partition": s.partition,
                        "last_applied_offset": s.offset,
                        "last_event_time": s.last_t,
                        "model_version": s.model_version,
                        "recent_items": s.hist_items,
                        "interest_norm": float((s.memory**2).sum() ** 0.5),
                    }
                )
        return web.json({"error": f"unknown user {user_id!r}"}, status=404)

    @app.page("/users/{user_id}/recommendations")
    async def user_recommendations(web: Any, request: Any, user_id: str) -> Any:
        """Fresh recommendations for a user at ``?at=`` (epoch s, default now): the stored interest
        projected to that time (the pushed recommendation is for the moment of the user's last event)."""
        try:
            at = float(request.query.get("at", time.time()))
            k = int(request.query.get("k", settings.top_k))
        except ValueError:
            return web.json({"error": "at must be a number (epoch seconds) and k an integer"}, status=400)
        for p in range(settings.partitions):
            raw = engine.store.partition(user_partition_name(p)).get(user_id.encode("utf-8"))
            if raw is not None:
                with engine.lock:  # the hot path folds under the same lock
                    items = engine.users.recommend(decode_user(raw), at, max(1, min(k, 1000)))
                return web.json(
                    {
                        "user_id": user_id,
                        "at": at,
                        "model_version": engine.checkpoint.version,
                        "items": [
                            {"item_id": i.item_id, "score": i.score, "reason": i.reason, "evidence": i.evidence} for i in items
                        ],
                    }
                )
        return web.json({"error": f"unknown user {user_id!r}"}, status=404)

    @app.service
    class HotPath(mode.Service):
        """Runs the confluent-kafka worker loop in a thread for as long as the app runs."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._thread: threading.Thread | None = None
            self.error: BaseException | None = None

        async def on_start(self) -> None:
            self._thread = threading.Thread(target=self._run, name="tide-hot-path", daemon=True)
            self._thread.start()

        def _run(self) -> None:
            try:
                worker.run()
            except BaseException as exc:  # surfaced to the app: the process must not run on without it
                self.error = exc
                logger.exception("hot path failed")
                app.loop.call_soon_threadsafe(lambda e=exc: asyncio.ensure_future(app.crash(e)))

        async def on_stop(self) -> None:
            worker.stop()
            if self._thread is not None:
                await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 30)

    return app, worker


def _declare_topics(app: faust.App, settings: Settings) -> None:
    t = settings.topics
    for name in (t.interactions, t.recommendations, t.item_updates, t.dlq):
        app.topic(name, partitions=settings.partitions, value_serializer="raw")
    for name in (t.item_vectors, t.items):
        app.topic(name, partitions=1, compacting=True, value_serializer="raw")


def run_worker(settings: Settings) -> int:
    engine = load_engine(settings)
    registry = CollectorRegistry()
    app, _ = build_app(settings, engine, registry)
    try:
        fworker = faust.Worker(
            app, loglevel=settings.log_level, quiet=True, override_logging=False, redirect_stdouts=False
        )
        fworker.spinner = None  # no terminal spinner in logs
        fworker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        engine.close()
    return 0
