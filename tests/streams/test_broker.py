"""The embedded broker: start, topics, a keyed round trip through a consumer group, and stop."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from streams.admin import TopicSpec, create_topics
from streams.broker import EmbeddedBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

# Tansu completes a group join after about session.timeout.ms / 2, so keep it small.
GROUP_CONF = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _consume(consumer: Consumer, n: int, timeout_s: float = 20) -> list:
    out: list = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        for m in consumer.consume(num_messages=n - len(out), timeout=0.5):
            assert m.error() is None, m.error()
            out.append(m)
    return out


def _listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(ip, port) of the TCP sockets in LISTEN state that process ``pid`` holds (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, width in (("tcp", 4), ("tcp6", 16)):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state == "0A" and inode in inodes:  # 0A = LISTEN
                ip_hex, port_hex = local.split(":")
                raw = bytes.fromhex(ip_hex)
                # /proc prints the address as host-order 32-bit words
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                fam = socket.AF_INET if width == 4 else socket.AF_INET6
                found.add((socket.inet_ntop(fam, raw), int(port_hex, 16)))
    return found


def test_starts_on_loopback_only(embedded_broker: EmbeddedBroker) -> None:
    assert embedded_broker.running
    host, port = embedded_broker.bootstrap_servers.split(":")
    assert host == "127.0.0.1"
    md = AdminClient({"bootstrap.servers": embedded_broker.bootstrap_servers}).list_topics(timeout=10)
    assert [(b.host, b.port) for b in md.brokers.values()] == [("127.0.0.1", int(port))]
    if Path("/proc/self/net/tcp").exists():
        assert _listening_addresses(embedded_broker.pid) == {("127.0.0.1", int(port))}
    assert embedded_broker.log_path.exists()


def test_create_topics_compacted_and_partitioned(embedded_broker: EmbeddedBroker) -> None:
    bs = embedded_broker.bootstrap_servers
    compacted, wide = _name("compacted"), _name("wide")
    specs = [
        TopicSpec(compacted, compacted=True, config={"retention.ms": "600000"}),
        TopicSpec(wide, partitions=3),
    ]
    create_topics(bs, specs, timeout_s=20)
    create_topics(bs, specs, timeout_s=20)  # existing topics are fine

    admin = AdminClient({"bootstrap.servers": bs})
    topics = admin.list_topics(timeout=10).topics
    assert len(topics[compacted].partitions) == 1
    assert len(topics[wide].partitions) == 3
    (fut,) = admin.describe_configs([ConfigResource("topic", compacted)]).values()
    configs = {k: v.value for k, v in fut.result(10).items()}
    assert configs["cleanup.policy"] == "compact"
    assert configs["retention.ms"] == "600000"

    with pytest.raises(ValueError, match="partition counts"):
        create_topics(bs, [TopicSpec(wide, partitions=2)], timeout_s=10)
    with pytest.raises(ValueError):
        TopicSpec("bad", partitions=0)


def test_keyed_round_trip_through_a_consumer_group(embedded_broker: EmbeddedBroker) -> None:
    bs = embedded_broker.bootstrap_servers
    topic, group = _name("events"), _name("group")
    create_topics(bs, [TopicSpec(topic, partitions=3)], timeout_s=20)

    producer = Producer({"bootstrap.servers": bs, "linger.ms": 5})
    sent = {f"user{i}": json.dumps({"user": f"user{i}", "n": i}).encode() for i in range(30)}
    ts = 1_700_000_000_000
    for i, (key, value) in enumerate(sent.items()):
        headers = [("trace", key.encode())]
        producer.produce(topic, key=key.encode(), value=value, headers=headers, timestamp=ts + i)
    assert producer.flush(10) == 0

    consumer = Consumer({"bootstrap.servers": bs, "group.id": group, **GROUP_CONF})
    consumer.subscribe([topic])
    try:
        msgs = _consume(consumer, len(sent))
        assert {m.key().decode(): m.value() for m in msgs} == sent
        assert len({m.partition() for m in msgs}) > 1  # keys spread over the partitions
        for m in msgs:
            assert m.headers() == [("trace", m.key())]
            kind, value = m.timestamp()
            assert kind == TIMESTAMP_CREATE_TIME and ts <= value < ts + len(sent)
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()

    # A new member of the same group resumes after the committed offsets: only new records arrive.
    for key in ("user0", "user1", "user2"):
        producer.produce(topic, key=key.encode(), value=b"again")
    assert producer.flush(10) == 0
    consumer = Consumer({"bootstrap.servers": bs, "group.id": group, **GROUP_CONF})
    consumer.subscribe([topic])
    try:
        msgs = _consume(consumer, 3)
        assert sorted(m.key() for m in msgs) == [b"user0", b"user1", b"user2"]
        assert {m.value() for m in msgs} == {b"again"}
        assert consumer.consume(num_messages=10, timeout=0.5) == []
    finally:
        consumer.close()


def test_stop_ends_the_process() -> None:
    broker = EmbeddedBroker()
    with broker:
        pid, port = broker.pid, broker.port
        assert pid is not None and broker.running
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    assert not broker.running and broker.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped, not a zombie
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    broker.stop()  # idempotent
    assert "ready in" in broker.log_path.read_text()


def test_start_fails_fast_on_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = EmbeddedBroker(port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match="in use"):
            broker.start(timeout_s=10)
        assert not broker.running and broker.pid is None
