"""The query API of a fleet, the interest-drift topic and the live-quality gauges, on two real
``tide worker`` processes in one group on the embedded broker.

Users come back with a new interest halfway (half of them; the others keep theirs). Either worker
answers for any user: the one that does not hold the user asks the one that does (streams/fleet.py,
streams/views.py), and every answer is what schemas/openapi.json says. Drifts reach
``tide.interest-drift`` as records of their schema, for users whose interest moved and no others, and
the workers' gauges measure their live recommendations.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from schemas import Interaction, load_schema
from streams.broker import LOOPBACK, free_port
from streams.launch import spawn_worker, stop_worker, wait_assigned
from tests.integration.conftest import (
    fresh_topics,
    http_get,
    metric_sum,
    produce_events,
    read_all,
    wait_for,
)
from tests.openapi import DOC, check_answer

pytestmark = pytest.mark.integration

GENRES = 4  # item k's genre is k mod 4
N_USERS = 16
PER_PHASE = 16  # events per user before and after the move
OWN_ITEMS = 3  # distinct items per user and phase: both phases fit the profile of conftest's model (8)
# A full move after 16 events peaks at a distance of 0.40 about ten events on (engine/fold/drift.py:
# the peak grows with the history before it), below the default threshold made for longer histories.
DRIFT_THRESHOLD = 0.3
T0 = 1_700_000_000.0
FORWARDED = {"X-Tide-Forwarded": "1"}  # answer from this worker's state only (streams/views.py)


def _drifts(u: int) -> bool:
    return u % 2 == 0


def _genre(u: int, phase: int) -> int:
    return (u + (2 if phase and _drifts(u) else 0)) % GENRES


def _events(phase: int) -> list[Interaction]:
    """Every user's events of one phase, interleaved."""
    out = []
    for j in range(PER_PHASE):
        for u in range(N_USERS):
            item = _genre(u, phase) + GENRES * ((u + j) % OWN_ITEMS)
            t = T0 + (phase * PER_PHASE + j) * 60 + u
            out.append(Interaction(f"user-{u}", f"item-{item}", t, "click"))
    return out


def test_either_worker_answers_for_every_user_and_drifts_are_reported(settings, tmp_path: Path, capsys):
    s = fresh_topics(settings, "api", partitions=2, catalog_stage=False, online_learning=False, top_k=10,
                     session_timeout_ms=2000)
    ports = {name: free_port() for name in ("a", "b")}
    logs = {name: (tmp_path / f"worker-{name}.log").open("ab") for name in ports}
    procs = {
        name: spawn_worker(s.model_copy(update={
            "worker_id": name, "web_port": port, "state_dir": tmp_path / f"state-{name}",
        }), logs[name], TIDE_DRIFT_THRESHOLD=str(DRIFT_THRESHOLD))
        for name, port in ports.items()
    }
    try:
        for name, port in ports.items():
            wait_assigned(port, procs[name], 120, tmp_path / f"worker-{name}.log")

        def one_partition_each() -> bool:
            held = [http_get(port, "/ready")[1]["partitions"] for port in ports.values()]  # type: ignore[index]
            return all(len(h) == 1 for h in held) and sorted(sum(held, [])) == [0, 1]

        wait_for(one_partition_each, 60, "the two workers never split the two partitions")
        events: list[Interaction] = []
        for phase in (0, 1):  # the second is judged against the recommendations the first left live
            events += _events(phase)
            produce_events(s, _events(phase))
            wait_for(
                lambda: sum(metric_sum(p, "tide_events_folded_total") for p in ports.values()) == len(events),
                60, "the events were not all folded",
            )
        users = [f"user-{u}" for u in range(N_USERS)]
        urls = {name: f"http://{LOOPBACK}:{port}" for name, port in ports.items()}

        # --- who holds whom: asked with the forwarded header, a worker answers from its own state only
        owner = {}
        for u in users:
            holders = [n for n, port in ports.items() if http_get(port, f"/users/{u}", FORWARDED)[0] == 200]
            assert len(holders) == 1, (u, holders)
            owner[u] = holders[0]
        assert set(owner.values()) == {"a", "b"}

        # --- either worker answers for every user, the holder naming itself (the directory may take a
        # heartbeat to list a peer that just got its partition)
        def all_answered() -> bool:
            return all(http_get(port, f"/users/{u}/recommendations?k=5")[0] == 200
                       for port in ports.values() for u in users)

        wait_for(all_answered, 30, "a worker never answered for the other's users")
        routed = 0
        for name, port in ports.items():
            for u in users:
                for path in (f"/users/{u}", f"/users/{u}/recommendations?k=5", f"/users/{u}/trajectory"):
                    status, body = http_get(port, path)
                    check_answer(path, status, body)
                    assert status == 200 and body["served_by"] == urls[owner[u]], (name, path, body)  # type: ignore[index]
                routed += owner[u] != name
        assert routed == N_USERS  # each user was asked once of the worker that does not hold them
        status, body = http_get(ports["a"], "/users/nobody")
        check_answer("/users/nobody", status, body)
        assert status == 404 and body["workers_asked"] == 2  # type: ignore[index]

        status, body = http_get(ports["b"], "/users/user-0/trajectory")
        points = body["points"]  # type: ignore[index]
        assert [p["time"] for p in points] == sorted(p["time"] for p in points) and points[-1]["time"] == max(
            e.timestamp for e in events if e.user_id == "user-0"
        )
        status, body = http_get(ports["a"], "/items/item-3/similar?k=5")
        check_answer("/items/item-3/similar", status, body)
        assert status == 200 and len(body["items"]) == 5  # type: ignore[index]
        assert "item-3" not in [i["item_id"] for i in body["items"]]  # type: ignore[index]
        for port in ports.values():
            check_answer("/ready", *http_get(port, "/ready"))
            check_answer("/health", *http_get(port, "/health"))
            assert http_get(port, "/openapi.json") == (200, DOC)

        # --- drifts: records of their schema, for users whose interest moved, naming the new items
        schema = jsonschema.Draft202012Validator(load_schema("interest_drift.v1"))
        drifts = [json.loads(m.value()) for m in read_all(s, s.topics.interest_drift)]
        for d in drifts:
            schema.validate(d)
        reported = {d["user_id"] for d in drifts}
        drifting = {f"user-{u}" for u in range(N_USERS) if _drifts(u)}
        assert reported <= drifting, f"false alarms: {reported - drifting}"
        assert len(reported) >= len(drifting) // 2, f"{len(reported)} of {len(drifting)} drifts found"
        for d in drifts:
            u = int(d["user_id"].split("-")[1])
            assert {int(i.split("-")[1]) % GENRES for i in d["after"]} == {_genre(u, 1)}
            assert d["distance"] >= d["threshold"] == DRIFT_THRESHOLD
        assert sum(metric_sum(p, "tide_interest_drifts_total") for p in ports.values()) == len(drifts)

        # --- live quality: each worker judged its users' events against what was live for them (the
        # gauges are refreshed every 5 s, so the second phase's judgements may take that long to show)
        wait_for(
            lambda: all(metric_sum(p, "tide_live_judged_events") > 0 for p in ports.values()), 30,
            "a worker never reported judged events",
        )
        gauges = {
            n: {g: metric_sum(p, f"tide_live_{g}") for g in (
                "judged_events", "recall_ratio", "mrr_ratio", "coverage_ratio", "intra_list_distance",
                "exposure_gini_ratio",
            )}
            for n, p in ports.items()
        }
        for g in gauges.values():
            assert g["judged_events"] > 0 and 0 <= g["mrr_ratio"] <= g["recall_ratio"] <= 1
            assert 0 < g["coverage_ratio"] <= 1 and g["intra_list_distance"] > 0
            assert 0 <= g["exposure_gini_ratio"] < 1
        exits = {n: stop_worker(p) for n, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for f in logs.values():
            f.close()
    assert exits == {"a": 0, "b": 0}
    with capsys.disabled():
        print(f"\n[query-api] {N_USERS} users answered by both workers; {len(drifts)} drifts of "
              f"{len(drifting)} planted; live quality {gauges}")
