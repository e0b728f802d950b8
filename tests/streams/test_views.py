"""The web views' answers (streams/views.py), called directly on a real engine and RocksDB store (the
small engine of tests/streams/conftest.py): every view with its parameters, each bad request's 400,
unknown users' 404, busy 503s, no state created by a lookup, and no view waiting for the engine's
lock on the event loop. tests/streams/test_app.py serves the same views over HTTP through Faust."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from engine.state.codec import decode_user
from streams.views import MAX_AT_AHEAD_S, MAX_K, MAX_PENDING, Views
from tests.streams.conftest import VIEW_ITEMS, VIEW_LAST_T, VIEW_USERS

K_ERROR = f"k must be an integer from 1 to {MAX_K}"
AT_NOT_A_NUMBER = "at must be a number: epoch seconds"
AT_OUT_OF_RANGE = "at must be finite epoch seconds, not negative and at most ten years ahead"
run = asyncio.run


class _Worker:  # what the views ask of the hot path: its health and the partitions it holds
    def __init__(self) -> None:
        self.status = "ok"
        self.owned = {0, 1}

    def health(self) -> dict:
        return {"status": self.status, "assigned": True}


@pytest.fixture
def views(view_settings, view_engine) -> Views:
    return Views(view_settings, view_engine, _Worker())


def _stored(views: Views, user_id: str):  # type: ignore[no-untyped-def]
    for name in views.engine.store.open_partitions("users-"):
        if (raw := views.engine.store.partition(name).get(user_id.encode())) is not None:
            return decode_user(raw)
    raise KeyError(user_id)


def _ranked(body: dict) -> list[tuple[str, float]]:
    return [(i["item_id"], i["score"]) for i in body["items"]]


# --- /health


def test_health_reports_the_worker_the_model_and_the_device(views):
    assert run(views.health()) == (
        200,
        {"status": "ok", "assigned": True, "model_version": views.engine.checkpoint.version, "device": "cpu"},
    )
    for status in ("degraded", "failed"):
        views.worker.status = status
        code, body = run(views.health())
        assert (code, body["status"]) == (503, status)


# --- /users/{id}


def test_user_answers_the_stored_state_and_where_it_lives(views):
    assert run(views.user("alice")) == (
        200,
        {
            "user_id": "alice",
            "served_by": "http://127.0.0.1:6066",
            "partition": 1,
            "last_applied_offset": 41,
            "last_event_time": VIEW_LAST_T,
            "model_version": "m-stored",
            "recent_items": ["i5", "i4", "i3", "i2", "i1", "i0"],  # most recent first
            "interest_norm": 5.0,
        },
    )
    status, body = run(views.user("用户-42 🎵"))
    assert (status, body["partition"], body["last_applied_offset"], body["interest_norm"]) == (200, 0, 7, 0.0)


def test_a_partition_that_moved_away_is_not_read(views):
    views.worker.owned = {0}  # partition 1 went to another worker; its state stays here as a checkpoint
    assert run(views.user("alice"))[0] == 404
    assert run(views.user("用户-42 🎵"))[0] == 200


def test_user_unknown_is_404_and_a_bad_id_is_400(views):
    assert run(views.user("nobody")) == (404, {"error": "unknown user"})
    for bad in ("", "\x00", "x" * 300, "\x1b[31mred", "a\u202eb", "\u00e9" * 128):
        status, body = run(views.user(bad))
        assert status == 400 and "user_id" in body["error"], (bad[:20], status, body)


# --- /users/{id}/recommendations


def test_recommendations_default_to_the_worker_top_k_at_now(views):
    before = time.time()
    status, body = run(views.recommendations("alice", {}))
    after = time.time()
    assert status == 200 and set(body) == {"user_id", "served_by", "at", "model_version", "items"}
    assert body["user_id"] == "alice" and body["model_version"] == views.engine.checkpoint.version
    assert before <= body["at"] <= after  # ``at`` defaults to the time of the request
    assert len(body["items"]) == views.settings.top_k == 5
    for item in body["items"]:
        assert set(item) == {"item_id", "score", "reason", "evidence"} and item["reason"], item
    ids = [i["item_id"] for i in body["items"]]
    scores = [i["score"] for i in body["items"]]
    assert len(set(ids)) == 5 and set(ids) <= set(VIEW_ITEMS)
    assert scores == sorted(scores, reverse=True)


def test_recommendations_are_the_engine_scores_at_the_time_asked(views):
    at = VIEW_LAST_T + 3_600.0
    status, body = run(views.recommendations("alice", {"at": str(at), "k": "7"}))
    assert status == 200 and body["at"] == at
    want = views.engine.users.recommend(_stored(views, "alice"), at, 7)
    assert _ranked(body) == [(i.item_id, i.score) for i in want]
    assert [(i["reason"], i["evidence"]) for i in body["items"]] == [(i.reason, i.evidence) for i in want]


def test_recommendations_k_from_one_to_the_whole_catalogue(views):
    for k, n in (("1", 1), ("20", 20), (str(MAX_K), len(VIEW_ITEMS))):  # never more than the catalogue
        status, body = run(views.recommendations("alice", {"k": k, "at": str(VIEW_LAST_T)}))
        assert (status, len(body["items"])) == (200, n), k
    one = run(views.recommendations("alice", {"k": "1", "at": str(VIEW_LAST_T)}))[1]
    every = run(views.recommendations("alice", {"k": str(MAX_K), "at": str(VIEW_LAST_T)}))[1]
    assert {i["item_id"] for i in every["items"]} == set(VIEW_ITEMS)
    assert one["items"][0]["item_id"] == every["items"][0]["item_id"]  # the top of the same ranking


def test_recommendations_at_a_time_before_the_last_event_are_scored_at_the_last_event(views):
    at_last = run(views.recommendations("alice", {"at": str(VIEW_LAST_T), "k": "10"}))[1]
    at_zero = run(views.recommendations("alice", {"at": "0", "k": "10"}))[1]
    assert at_zero["at"] == 0.0 and _ranked(at_zero) == _ranked(at_last)


def test_recommendations_at_is_bounded_ten_years_ahead(views):
    now = time.time()
    assert run(views.recommendations("alice", {"at": str(now + MAX_AT_AHEAD_S - 86_400)}))[0] == 200
    assert run(views.recommendations("alice", {"at": str(now + MAX_AT_AHEAD_S + 86_400)})) == (
        400,
        {"error": AT_OUT_OF_RANGE},
    )


@pytest.mark.parametrize(
    "query, error",
    [
        ({"k": "0"}, K_ERROR),
        ({"k": str(MAX_K + 1)}, K_ERROR),
        ({"k": "-1"}, K_ERROR),
        ({"k": "+5"}, K_ERROR),
        ({"k": "3.5"}, K_ERROR),
        ({"k": "1e3"}, K_ERROR),
        ({"k": ""}, K_ERROR),
        ({"k": "\u0665"}, K_ERROR),  # a digit, but not an ASCII one
        ({"k": "9" * 5000}, K_ERROR),
        ({"at": "soon"}, AT_NOT_A_NUMBER),
        ({"at": ""}, AT_NOT_A_NUMBER),
        ({"at": "nan"}, AT_OUT_OF_RANGE),
        ({"at": "inf"}, AT_OUT_OF_RANGE),
        ({"at": "-inf"}, AT_OUT_OF_RANGE),
        ({"at": "-5"}, AT_OUT_OF_RANGE),
        ({"at": "1e300"}, AT_OUT_OF_RANGE),
        ({"at": "1700000000", "k": "0"}, K_ERROR),  # a good ``at`` does not excuse a bad ``k``
    ],
)
def test_recommendations_bad_parameters_are_400_with_the_reason(views, query, error):
    assert run(views.recommendations("alice", query)) == (400, {"error": error})
    # the parameters are checked before the user is looked up
    assert run(views.recommendations("nobody", query)) == (400, {"error": error})


def test_recommendations_unknown_user_is_404_and_a_bad_id_is_400(views):
    assert run(views.recommendations("nobody", {})) == (404, {"error": "unknown user"})
    assert run(views.recommendations("nobody", {"k": "3", "at": "0"})) == (404, {"error": "unknown user"})
    for bad in ("", "\x00", "x" * 300, "\x1b[31mred", "a\u202eb"):
        status, body = run(views.recommendations(bad, {"k": "3"}))
        assert status == 400 and "user_id" in body["error"], (bad[:20], status, body)


def test_bad_requests_and_lookups_create_no_state(views):
    partitions = sorted(views.engine.store.open_partitions(""))
    stored = {n: dict(views.engine.store.partition(n).items()) for n in partitions}
    for user, query in [("nobody", {}), ("nobody", {"k": "3"}), ("\x00", {}), ("alice", {"k": "0"}),
                        ("alice", {"at": "nan"}), ("alice", {"k": "3"})]:
        run(views.recommendations(user, query))
    for user in ("nobody", "\x00", "alice"):
        run(views.user(user))
    assert sorted(views.engine.store.open_partitions("")) == partitions  # no lookup opened a store
    assert {n: dict(views.engine.store.partition(n).items()) for n in partitions} == stored


# --- the engine's lock: requests in turn, the event loop never waiting


def test_concurrent_requests_are_all_answered_one_at_a_time(views):
    async def many() -> list:
        return await asyncio.gather(*(views.recommendations("alice", {"k": "3", "at": str(VIEW_LAST_T)})
                                      for _ in range(10)))

    answers = run(many())
    assert [a[0] for a in answers] == [200] * 10
    assert all(_ranked(a[1]) == _ranked(answers[0][1]) for a in answers)
    assert views.pending == 0  # every request counted out again


def test_busy_turns_away_only_requests_that_would_be_scored(views):
    views.pending = MAX_PENDING
    assert run(views.recommendations("alice", {})) == (
        503,
        {"error": "busy: too many recommendation requests waiting"},
    )
    assert run(views.recommendations("nobody", {}))[0] == 404  # no engine needed to answer these
    assert run(views.recommendations("alice", {"k": "0"}))[0] == 400
    assert run(views.user("alice"))[0] == 200 and run(views.health())[0] == 200
    views.pending = MAX_PENDING - 1
    assert run(views.recommendations("alice", {}))[0] == 200
    assert views.pending == MAX_PENDING - 1


def test_views_never_wait_for_the_engine_on_the_event_loop(views):
    held, release, released = threading.Event(), threading.Event(), threading.Event()

    def hold_the_engine() -> None:  # what the hot path does while it folds a batch
        with views.engine.lock:
            held.set()
            release.wait(30)
        released.set()

    threading.Thread(target=hold_the_engine, daemon=True).start()
    assert held.wait(30)

    async def scenario() -> tuple[int, dict]:
        request = asyncio.ensure_future(views.recommendations("alice", {"k": "5"}))
        await asyncio.sleep(0.05)  # the request is waiting for the engine now
        assert views.pending == 1
        # bounded so that a view that waited would fail the test rather than hang it
        status, _ = await asyncio.wait_for(views.health(), 20)
        # answered while the hot path still held the engine, and the request still waiting (off the loop)
        assert status == 200 and not released.is_set() and not request.done()
        assert (await views.user("alice"))[0] == 200 and not released.is_set()
        views.pending = MAX_PENDING
        assert (await views.recommendations("alice", {}))[0] == 503  # too many waiting: turned away
        views.pending = 1
        release.set()
        return await asyncio.wait_for(request, 30)

    status, body = run(scenario())
    assert status == 200 and len(body["items"]) == 5 and released.is_set()
    assert np.isfinite([i["score"] for i in body["items"]]).all()


# --- /ready


def test_ready_only_while_healthy_with_partitions(views):
    assert run(views.ready()) == (
        200, {"ready": True, "status": "ok", "partitions": [0, 1], "url": "http://127.0.0.1:6066"}
    )
    views.worker.status = "degraded"
    assert run(views.ready())[0] == 503


# --- /users/{id}/trajectory


def test_trajectory_follows_the_history_oldest_first(views):
    code, body = run(views.trajectory("alice"))
    assert code == 200
    points = body["points"]
    assert [p["item_id"] for p in points] == VIEW_ITEMS[:6]
    assert [p["time"] for p in points] == [VIEW_LAST_T - 5 + k for k in range(6)]
    assert points[-1]["interest"] == ["i5", "i4", "i3"]  # the most recent weigh most
    assert points[0]["interest"] == ["i0"]
    assert all(0.0 <= p["distance"] <= 1.0 for p in points)
    assert run(views.trajectory("nobody"))[0] == 404
    assert run(views.trajectory(""))[0] == 400


# --- /items/{id}/similar


def test_similar_items_are_the_nearest_by_cosine_without_the_item_itself(views):
    code, body = run(views.similar("i3", {"k": "4"}))
    assert code == 200
    table = views.engine.users.table
    vec = table.vectors().float()
    vec = vec / vec.norm(dim=1, keepdim=True)
    sims = (vec @ vec[table.index["i3"]]).tolist()
    expected = sorted((i for i in VIEW_ITEMS if i != "i3"), key=lambda i: -sims[table.index[i]])[:4]
    assert [i["item_id"] for i in body["items"]] == expected
    assert all(i["reason"].startswith("close in the model's item space (cosine ") for i in body["items"])
    assert run(views.similar("unknown-item", {}))[0] == 404
    assert run(views.similar("i3", {"k": "0"})) == (400, {"error": K_ERROR})


# --- routing to the worker that holds the user


class _Directory:
    def __init__(self, peers):  # type: ignore[no-untyped-def]
        self._peers = peers

    def peers(self):  # type: ignore[no-untyped-def]
        return self._peers


def test_a_user_held_elsewhere_is_answered_by_that_worker(views):
    from aiohttp import web

    from streams.fleet import Member

    async def scenario():  # type: ignore[no-untyped-def]
        seen = []

        async def owner(request):  # type: ignore[no-untyped-def]
            seen.append((request.path_qs, request.headers.get("X-Tide-Forwarded")))
            if request.match_info["user"] == "bob":
                return web.json_response({"user_id": "bob", "served_by": "peer"})
            return web.json_response({"error": "unknown user"}, status=404)

        app = web.Application()
        app.router.add_get("/users/{user}", owner)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        views.directory = _Directory([
            Member("g", "w-2", f"http://127.0.0.1:{port}", (2,), time.time()),
            Member("g", "w-3", "http://127.0.0.1:9", (3,), time.time()),  # nobody listens: unreachable
        ])
        try:
            local = await views.user("bob")
            found = await views.routed(local, "/users/bob", forwarded=False)
            missing = await views.routed(await views.user("carol"), "/users/carol", forwarded=False)
            asked_only_here = await views.routed(await views.user("bob"), "/users/bob", forwarded=True)
            here = await views.routed(await views.user("alice"), "/users/alice", forwarded=False)
        finally:
            await views.close()
            await runner.cleanup()
        return local, found, missing, asked_only_here, here, seen

    local, found, missing, asked_only_here, here, seen = run(scenario())
    assert local[0] == 404
    assert found == (200, {"user_id": "bob", "served_by": "peer"})
    assert missing[0] == 404 and missing[1]["workers_asked"] == 3
    assert missing[1]["unreachable"] == ["http://127.0.0.1:9"]
    assert asked_only_here[0] == 404  # a forwarded request is answered from this worker only
    assert here[1]["served_by"] == "http://127.0.0.1:6066"
    assert seen == [("/users/bob", "1"), ("/users/carol", "1")]


# --- the answers against the OpenAPI document


def test_every_answer_is_what_the_openapi_document_says(views):
    from tests.openapi import check_answer

    user = VIEW_USERS[0][0]
    asked = [
        ("/health", views.health()),
        ("/ready", views.ready()),
        (f"/users/{user}", views.user(user)),
        ("/users/nobody", views.user("nobody")),
        ("/users/%00", views.user("\x00")),
        (f"/users/{user}/recommendations", views.recommendations(user, {"k": "3"})),
        (f"/users/{user}/recommendations", views.recommendations(user, {"k": "zero"})),
        ("/users/nobody/recommendations", views.recommendations("nobody", {})),
        (f"/users/{user}/trajectory", views.trajectory(user)),
        ("/users/nobody/trajectory", views.trajectory("nobody")),
        ("/items/i3/similar", views.similar("i3", {"k": "4"})),
        ("/items/nothing/similar", views.similar("nothing", {})),
        ("/items/i3/similar", views.similar("i3", {"k": "-1"})),
    ]
    statuses = set()
    for path, view in asked:
        status, body = run(view)
        check_answer(path, status, body)
        statuses.add(status)
    assert statuses == {200, 400, 404}
    views.worker.status = "failed"
    check_answer("/health", *run(views.health()))
    check_answer("/ready", *run(views.ready()))
