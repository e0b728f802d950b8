"""The worker process as an operator meets it: its web views under bad requests, a broker that
stalls and comes back, and a broker that is lost, against a broker of this test's own (it is paused
and killed here) and the real ``tide worker`` process."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from engine.state.codec import decode_user
from engine.state.store import RocksDBStateStore
from schemas import Interaction
from streams.admin import create_topics
from streams.broker import EmbeddedBroker, free_port
from streams.config import Settings
from streams.launch import spawn_worker
from streams.topics import topic_specs
from tests.integration.conftest import (
    http_get,
    metric_sum,
    produce_events,
    read_all,
    synthetic_events,
    wait_for,
)

pytestmark = pytest.mark.integration

SECRET = "hunter2-do-not-log"
T = 1_700_000_000.0


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp)."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if state == "0A" and int(p, 16) == port:  # LISTEN
            out.add(".".join(str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return out


def test_web_views_broker_stall_and_broker_loss(checkpoint_dir, tmp_path, capsys):
    broker = EmbeddedBroker()
    broker.start()
    port, log = free_port(), tmp_path / "worker.log"
    settings = Settings(
        bootstrap_servers=broker.bootstrap_servers, checkpoint_dir=checkpoint_dir,
        state_dir=tmp_path / "state", partitions=2, top_k=5, web_port=port, broker_timeout_s=20,
        session_timeout_ms=3000, catalog_stage=False,
    )
    create_topics(broker.bootstrap_servers, topic_specs(settings))
    proc = spawn_worker(settings, open(log, "ab"), TIDE_SASL_USERNAME="tide", TIDE_SASL_PASSWORD=SECRET)
    try:
        wait_for(
            lambda: (http_get(port, "/health")[1] or {}).get("assigned"),
            90,
            "the worker never got its partitions",
        )
        first = synthetic_events(n_users=10, per_user=6)
        first.append(Interaction("user-0", "payload-marker-item", T + 10_000, "view"))
        delivered = produce_events(settings, first)
        Producer = __import__("confluent_kafka").Producer
        p = Producer(settings.producer_conf())
        p.produce(settings.topics.interactions, b'{"user_id": "payload-marker-bad"', b"user-0")
        p.flush(10)
        wait_for(lambda: http_get(port, "/health")[1].get("folded", 0) == len(first), 60, "nothing folded")

        # --- the web views: loopback only; every bad request a 4xx, and no state created by a GET
        assert _listening_addresses(port) == {"127.0.0.1"}
        status, health = http_get(port, "/health")
        assert status == 200 and health["status"] == "ok" and SECRET not in json.dumps(health)
        assert http_get(port, "/users/user-3")[0] == 200
        assert http_get(port, "/users/user-3/recommendations?k=3")[0] == 200
        bad = [
            "/users/nobody", "/users/nobody/recommendations",
            "/users/" + "x" * 300, "/users/" + urllib.parse.quote("\x1b[31mred"), "/users/" + "y" * 20_000,
            "/users/%00", "/users/%ff%fe",
            *(f"/users/user-3/recommendations?{q}" for q in (
                "k=0", "k=1001", "k=-1", "k=abc", "k=1e3", "k=" + "9" * 5000, "at=nan", "at=inf", "at=-inf",
                "at=-5", "at=1e300", "at=yesterday",
            )),
        ]
        for path in bad:
            status, body = http_get(port, path)
            assert 400 <= status < 500, (path[:60], status, body)

        # --- a broker that stops answering for longer than the session timeout, then resumes
        more = synthetic_events(n_users=10, per_user=4, t0=T + 20_000)
        feeder = threading.Thread(target=lambda: delivered.extend(produce_events(settings, more)))
        os.killpg(broker.pid, signal.SIGSTOP)
        t_stop = time.monotonic()
        feeder.start()  # the producer buffers while the broker is paused
        wait_for(lambda: http_get(port, "/health")[0] == 503, 20, "a stalled broker never showed in /health")
        status, health = http_get(port, "/health")
        assert health["status"] == "degraded" and health["broker"]["reachable"] is False
        assert metric_sum(port, "tide_broker_up") == 0 and metric_sum(port, "tide_kafka_errors_total") > 0
        time.sleep(max(0.0, 4.0 - (time.monotonic() - t_stop)))  # past the 3 s session timeout
        os.killpg(broker.pid, signal.SIGCONT)
        t_resume = time.monotonic()
        feeder.join(60)
        wait_for(lambda: http_get(port, "/health")[1].get("folded", 0) == len(first) + len(more), 90,
                 "the worker did not fold what arrived during the stall")
        recovery_s = time.monotonic() - t_resume
        wait_for(lambda: http_get(port, "/health")[0] == 200, 30, "/health did not recover")
        assert metric_sum(port, "tide_broker_up") == 1
        answered = set()  # every event is answered by a recommendation (first_offset … offset of its user)
        for m in read_all(settings, settings.topics.recommendations):
            r = json.loads(m.value())
            src = r["source"]
            answered.update(
                (r["user_id"], src["partition"], o) for o in range(src["first_offset"], src["offset"] + 1)
            )
        assert len(delivered) == len(first) + len(more)
        assert all((e.user_id, p, o) in answered for e, (p, o) in zip(first + more, delivered))

        # --- a broker lost outright and restarted empty on the same port: a clear exit, never a hang
        broker_port = broker.port
        broker.stop()
        broker = EmbeddedBroker(port=broker_port)
        broker.start()
        t_lost = time.monotonic()
        proc.wait(60)
        exit_s = time.monotonic() - t_lost
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        broker.stop()
    text = log.read_text()
    assert proc.returncode == 3, text[-3000:]
    # proc.wait(60) above bounds the exit: a worker that hung would have failed there
    assert "CRITICAL" in text and any(w in text for w in ("was recreated", "does not exist", "unreachable"))
    assert SECRET not in text and "payload-marker" not in text  # no secrets, no payloads in the log
    store = RocksDBStateStore(settings.state_dir)  # nothing lost, nothing folded twice, nothing made by GETs
    try:
        users = {k: decode_user(v) for p in ("users-0", "users-1") for k, v in store.partition(p).items()}
    finally:
        store.close()
    assert sorted(users) == sorted(f"user-{u}".encode() for u in range(10))
    assert (
        {u.n_events for k, u in users.items() if k != b"user-0"} == {10}
        and users[b"user-0"].n_events == 11
    )
    with capsys.disabled():
        print(f"\n[operations] a 4 s stall (session timeout 3 s): all {len(delivered)} events folded once"
              f" and answered {recovery_s:.1f} s after it ended;"
              f" lost broker: exit status 3 after {exit_s:.1f} s")
