"""The worker process: a Faust app for the topology, web views and lifecycle, with the hot path on
confluent-kafka.

Faust serves the query API (streams/views.py, schemas/openapi.json: health and readiness, a user's
state, fresh recommendations, interest trajectory, similar items; any worker answers for any user),
``/metrics`` (Prometheus) and ``/openapi.json``, and starts and stops the hot path and the worker
directory (streams/fleet.py) as services; ``tide topics`` creates the topics. The volume goes through
:class:`streams.worker.Worker` (confluent-kafka) in a thread of its own: on the embedded broker a
Faust agent alone consumed about 10,000 events/s and 4,000–5,000 with one send per event, while a
confluent-kafka loop moves about 62,000 (DESIGN.md, "Measured constraints").
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

import faust
import mode
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from schemas import load_schema
from streams.config import Settings
from streams.fleet import Directory
from streams.metrics import Metrics
from streams.runtime import Engine, load_engine
from streams.views import FORWARDED, Views
from streams.worker import Worker

__all__ = ["build_app", "faust_credentials", "run_worker"]

logger = logging.getLogger(__name__)


def build_app(settings: Settings, engine: Engine, registry: CollectorRegistry) -> tuple[faust.App, Worker]:
    metrics = Metrics(
        registry,
        topics=[settings.topics.interactions, settings.topics.items],
        partitions=range(settings.partitions),
    )
    metrics.set_model(engine.checkpoint.version)
    worker = Worker(settings, engine, metrics)
    app = faust.App(
        f"{settings.group_id}-control",  # the group's: two deployments never share a control app
        broker=[f"kafka://{h}" for h in settings.bootstrap_servers.split(",")],
        broker_credentials=faust_credentials(settings),
        store="memory://",
        web_host=settings.web_host,
        web_bind=settings.web_host,  # listen where we advertise (web_host alone only sets the URL)
        web_port=settings.web_port,
        web_in_thread=False,
        topic_partitions=settings.partitions,
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_ms / 6000),
        datadir=str(settings.state_dir / "faust"),
    )
    # TIDE's topics are not declared to Faust: `tide topics` creates them with their partitions and
    # policies (streams/topics.py), and a Faust that declared them would quietly recreate them on a
    # broker that lost them, where the worker must see that they are gone (streams/liveness.py).
    directory = Directory(settings, lambda: list(worker.owned))
    views = Views(settings, engine, worker, directory)

    _serve_query_api(app, views, registry)

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
            directory.start()

        def _run(self) -> None:
            try:
                worker.run()
            except BaseException as exc:  # surfaced to the app: the process must not run on without it
                self.error = exc
                logger.critical("hot path failed, the worker exits: %s", worker.error, exc_info=exc)
                _exit_soon(engine, EXIT_FAILED)
                app.loop.call_soon_threadsafe(lambda e=exc: asyncio.ensure_future(app.crash(e)))

        async def on_stop(self) -> None:
            await views.close()
            worker.stop()
            if self._thread is not None:
                await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 30)
            await asyncio.get_running_loop().run_in_executor(None, directory.stop)
            # The hot path has committed and stopped; Faust's own Kafka clients may still wait for a
            # broker that is gone. Bound the rest of the shutdown.
            _exit_soon(engine, EXIT_FAILED if self.error is not None else 0)

    return app, worker


def _serve_query_api(app: faust.App, views: Views, registry: CollectorRegistry) -> None:
    """The query API's routes (schemas/openapi.json) and ``/metrics``; a user's routes answer from the
    worker that holds the user (:meth:`Views.routed`)."""

    def forwarded(request: Any) -> bool:
        return request.headers.get(FORWARDED) is not None

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        status, body = await views.health()
        return web.json(body, status=status)

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        status, body = await views.ready()
        return web.json(body, status=status)

    @app.page("/openapi.json")
    async def openapi(web: Any, request: Any) -> Any:
        return web.json(load_schema("openapi"))

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/users/{user_id}")
    async def user_state(web: Any, request: Any, user_id: str) -> Any:
        answer = await views.user(user_id)
        status, body = await views.routed(answer, request.path_qs, forwarded(request))
        return web.json(body, status=status)

    @app.page("/users/{user_id}/recommendations")
    async def user_recommendations(web: Any, request: Any, user_id: str) -> Any:
        answer = await views.recommendations(user_id, request.query)
        status, body = await views.routed(answer, request.path_qs, forwarded(request))
        return web.json(body, status=status)

    @app.page("/users/{user_id}/trajectory")
    async def user_trajectory(web: Any, request: Any, user_id: str) -> Any:
        answer = await views.trajectory(user_id)
        status, body = await views.routed(answer, request.path_qs, forwarded(request))
        return web.json(body, status=status)

    @app.page("/items/{item_id}/similar")
    async def similar(web: Any, request: Any, item_id: str) -> Any:
        status, body = await views.similar(item_id, request.query)
        return web.json(body, status=status)


#: The exit status of a worker whose hot path failed (the log's last CRITICAL line says why).
EXIT_FAILED = 3
#: The rest of a shutdown (Faust's Kafka clients, the web server) may take this long before the
#: process exits anyway.
SHUTDOWN_GRACE_S = 5.0


def _exit_soon(engine: Engine, code: int) -> None:
    """Exit with ``code`` in :data:`SHUTDOWN_GRACE_S` unless the process has exited by then."""

    def exit_now() -> None:
        logger.warning("shutdown did not finish in %.0f s; exiting with status %d", SHUTDOWN_GRACE_S, code)
        try:
            engine.close()
        finally:
            logging.shutdown()
            os._exit(code)

    timer = threading.Timer(SHUTDOWN_GRACE_S, exit_now)
    timer.daemon = True
    timer.start()


def faust_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """The cluster's SASL/SSL settings for Faust's own Kafka clients (the librdkafka ones get them
    from ``Settings.librdkafka``)."""
    protocol = settings.security_protocol
    if protocol == "PLAINTEXT":
        return None
    ssl_context = None
    if protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        ssl_context = create_ssl_context(
            cafile=settings.ssl_ca_location, certfile=settings.ssl_certificate_location,
            keyfile=settings.ssl_key_location,
            password=settings.ssl_key_password.get_secret_value() if settings.ssl_key_password else None,
        )
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context)
    return faust.SASLCredentials(
        username=settings.sasl_username,
        password=settings.sasl_password.get_secret_value() if settings.sasl_password else None,
        ssl_context=ssl_context, mechanism=settings.sasl_mechanism or "PLAIN",
    )


def run_worker(settings: Settings) -> int:
    """Run the worker process until SIGTERM (status 0) or until its hot path fails (status
    :data:`EXIT_FAILED`, after a CRITICAL log line with the reason)."""
    engine = load_engine(settings)
    registry = CollectorRegistry()
    app, worker = build_app(settings, engine, registry)
    code = 0
    try:
        fworker = faust.Worker(
            app, loglevel=settings.log_level, quiet=True, override_logging=False, redirect_stdouts=False
        )
        fworker.spinner = None  # no terminal spinner in logs
        fworker.execute_from_commandline()
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        engine.close()
    return EXIT_FAILED if worker.error is not None else code
