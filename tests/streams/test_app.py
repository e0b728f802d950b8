"""The worker's web server (streams/app.py) over HTTP: Faust's aiohttp application served on loopback by
aiohttp's test server, with the small engine of tests/streams/conftest.py. No broker: the Kafka
clients the worker would make are replaced by stand-ins that connect nowhere (as in test_security.py).
What each view answers is tested in test_views.py; here, that the routes reach them, parameters and
escaped ids included, and that the answers are JSON with the view's status."""

from __future__ import annotations

import asyncio
import urllib.parse

import pytest
from prometheus_client import CollectorRegistry

from tests.streams.conftest import VIEW_LAST_T


class _NoClient:  # a Kafka client that is built and never used
    def __init__(self, *args: object, **kwargs: object) -> None:
        pass


@pytest.fixture
def served(view_settings, view_engine, monkeypatch):  # type: ignore[no-untyped-def]
    import streams.worker
    from streams.app import build_app

    for name in ("Consumer", "Producer", "AdminClient"):
        monkeypatch.setattr(streams.worker, name, _NoClient)
    return build_app(view_settings, view_engine, CollectorRegistry())


def _get_all(app, paths: list[str], method: str = "GET") -> list[tuple[int, str, object]]:  # type: ignore[no-untyped-def]
    """(status, content type, JSON body or text) of each path, requested in turn."""
    from aiohttp.test_utils import TestClient, TestServer

    async def go() -> list[tuple[int, str, object]]:
        out = []
        async with TestClient(TestServer(app.web.web_app)) as client:
            for path in paths:
                async with client.request(method, path) as r:
                    body = await (r.json() if r.content_type == "application/json" else r.text())
                    out.append((r.status, r.content_type, body))
        return out

    return asyncio.run(go())


def test_every_route_answers_json_with_the_view_status(served):
    app, worker = served
    worker.owned = {0, 1}  # as if the group had assigned it both partitions
    unicode_user = "/users/" + urllib.parse.quote("用户-42 🎵")
    answers = _get_all(app, [
        "/health",
        "/users/alice",
        unicode_user,
        f"/users/alice/recommendations?k=3&at={VIEW_LAST_T}",
        unicode_user + "/recommendations",
        "/users/nobody",
        "/users/nobody/recommendations?k=3",
        "/users/%00",
        "/users/" + urllib.parse.quote("\x1b[31mred") + "/recommendations",
        "/users/" + "x" * 300,
        "/users/alice/recommendations?k=0",
        "/users/alice/recommendations?k=1001",
        "/users/alice/recommendations?at=nan",
        "/users/alice/recommendations?at=yesterday",
    ])
    statuses = [a[0] for a in answers]
    assert statuses == [200, 200, 200, 200, 200, 404, 404, 400, 400, 400, 400, 400, 400, 400]
    assert {a[1] for a in answers} == {"application/json"}
    health, alice, someone, recs, someone_recs = (a[2] for a in answers[:5])
    assert health["status"] == "ok" and health["assigned"] is False  # no partitions without a broker
    assert health["model_version"] == worker.engine.checkpoint.version and health["device"] == "cpu"
    assert alice["user_id"] == "alice" and alice["partition"] == 1 and alice["interest_norm"] == 5.0
    assert someone["user_id"] == "用户-42 🎵" and someone["partition"] == 0  # the escaped id, decoded
    assert recs["at"] == VIEW_LAST_T and len(recs["items"]) == 3  # the query reaches the view
    assert len(someone_recs["items"]) == 5  # the worker's top_k
    assert answers[5][2] == {"error": "unknown user"}
    assert answers[10][2] == {"error": "k must be an integer from 1 to 1000"}


def test_health_is_503_once_the_hot_path_failed(served):
    app, worker = served
    worker.error = "the engine is failing"
    [(status, _, body)] = _get_all(app, ["/health"])
    assert (
        status == 503 and body["status"] == "failed" and body["hot_path"]["error"] == "the engine is failing"
    )


def test_metrics_are_prometheus_text_with_the_model(served):
    app, worker = served
    [(status, content_type, text)] = _get_all(app, ["/metrics"])
    assert status == 200 and content_type == "text/plain"
    version = worker.engine.checkpoint.version
    assert f'tide_model_info{{version="{version}"}} 1.0' in text.splitlines()
    assert 'tide_events_consumed_total{topic="tide.interactions"} 0.0' in text.splitlines()


def test_only_get_is_served(served):
    app, _ = served
    answers = _get_all(app, ["/health", "/users/alice", "/users/alice/recommendations"], method="POST")
    assert [a[0] for a in answers] == [405, 405, 405]
