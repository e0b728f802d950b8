"""Can Faust's changelog-backed Tables carry TIDE's per-user state, or must TIDE write its own changelog?

TIDE's hot path folds micro-batches of up to a few thousand events at >= 10,000 events/s per worker
(2 cores), each event rewriting its user's state (about 1 KiB), and it needs that state back after a
restart. Against the embedded broker (:class:`streams.broker.EmbeddedBroker`), with ``--records``
records (default ``--keys``) of ``--value-bytes`` bytes each, keys spread round-robin over ``--keys``
users, this measures:

(a) Faust, for each table store (``memory://``; ``rocksdb://`` when faust-streaming finds rocksdict):
    an agent reading the pre-filled input topic and setting ``table[key] = value`` — updates/s from
    the first event to the last update with its changelog record flushed; then a fresh app on the
    same changelog (empty data directory) — seconds from ``app.start()`` to the table recovered and
    the app ready, and how many keys the recovered table holds.
(b) confluent-kafka: one ``Producer`` (linger 5 ms, one ``produce`` per record, then ``flush``) writing
    the same records as a changelog — records/s; and one ``Consumer`` reading that partition back
    from offset 0 to partition EOF into a dict — records/s and seconds.

Recovery time includes the app's start and its group join (about ``session.timeout.ms / 2``, 3 s, on
the embedded broker). The embedded broker reports a partition's high watermark as the base offset
of its last record batch + 1, and Faust stops recovering there: the rest of the changelog's last
batch (a few records) is not recovered, hence "of N keys recovered"; a real Kafka has no such gap.

Run ``python -m streams.bench.faust_tables [--keys 100000] [--value-bytes 1024] [--json]``; each
figure is one line. Every wait is bounded; the broker and the temporary directories are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["confluent_changelog", "faust_table", "main"]

logger = logging.getLogger(__name__)

SESSION_TIMEOUT_S = 6.0  # the embedded broker's first assignment waits about half of it
STEP_TIMEOUT_S = 300.0  # the bound on any one phase (filling, draining, recovering, reading back)
INPUT = "bench-faust-input"
IDLE = "bench-faust-idle"  # the recovering app's (empty) source topic
CHANGELOG = "bench-confluent-changelog"


def _records(n: int, keys: int, value_bytes: int) -> Callable[[int], tuple[bytes, bytes]]:
    value = os.urandom(value_bytes)  # one value for all: generating them is not what is measured
    return lambda i: (b"user-%d" % (i % keys), value)


def produce(bootstrap: str, topic: str, n: int, record: Callable[[int], tuple[bytes, bytes]]) -> float:
    """Write ``n`` records to partition 0 of ``topic``, one ``produce`` each, then flush; seconds taken."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    t0 = time.perf_counter()
    for i in range(n):
        key, value = record(i)
        while True:
            try:
                producer.produce(topic, value, key, partition=0)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(STEP_TIMEOUT_S) != 0:
        raise TimeoutError(f"{topic}: records still unsent after {STEP_TIMEOUT_S} s")
    return time.perf_counter() - t0


def read_back(bootstrap: str, topic: str) -> tuple[dict[bytes | None, bytes | None], int, float]:
    """Partition 0 of ``topic`` from offset 0 to EOF into a dict: (the dict, records read, seconds)."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"bench-read-back-{os.getpid()}",  # only assigned, never subscribed or committed
        "enable.partition.eof": True,
        "fetch.wait.max.ms": 10,
        "enable.auto.commit": False,
        "session.timeout.ms": int(SESSION_TIMEOUT_S * 1000),
    })  # fmt: skip
    state: dict[bytes | None, bytes | None] = {}
    n = 0
    try:
        t0 = time.perf_counter()
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: no partition EOF after {n} records in {STEP_TIMEOUT_S} s")
            for msg in consumer.consume(1_000, timeout=0.02):  # it waits out the timeout at EOF
                err = msg.error()
                if err is None:
                    state[msg.key()] = msg.value()
                    n += 1
                elif err.code() == KafkaError._PARTITION_EOF:
                    return state, n, time.perf_counter() - t0
                else:
                    raise KafkaException(err)
    finally:
        consumer.close()


def confluent_changelog(bootstrap: str, n: int, keys: int, value_bytes: int) -> dict[str, float]:
    """(b): write ``n`` records as a changelog with confluent-kafka, then read it back to EOF."""
    from streams.admin import TopicSpec, create_topics

    create_topics(bootstrap, [TopicSpec(CHANGELOG, compacted=True)])
    write_s = produce(bootstrap, CHANGELOG, n, _records(n, keys, value_bytes))
    state, read, read_s = read_back(bootstrap, CHANGELOG)
    if read != n or len(state) != min(n, keys):
        raise RuntimeError(f"read back {read} records, {len(state)} keys; wrote {n} records")
    return {
        "produce_records_per_s": n / write_s,
        "read_back_records_per_s": read / read_s,
        "read_back_s": read_s,
        "read_back_keys": float(len(state)),
    }


def _app(app_id: str, bootstrap: str, store: str, datadir: Path) -> Any:
    import faust

    return faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store=store,
        datadir=str(datadir),
        web_enabled=False,
        topic_partitions=1,
        producer_linger=0.005,  # as the confluent-kafka producer of (b)
        broker_session_timeout=SESSION_TIMEOUT_S,
        broker_heartbeat_interval=1.0,
    )


def _raw() -> Any:
    import faust

    return faust.Schema(key_serializer="raw", value_serializer="raw")


async def _stop(app: Any) -> None:
    try:
        await asyncio.wait_for(app.stop(), 30)
    except asyncio.TimeoutError:
        logger.warning("faust app %s did not stop in 30 s", app.conf.id)


async def _faust_table(bootstrap: str, n: int, store: str, workdir: Path) -> dict[str, float]:
    app_id = f"bench-{store.split(':')[0]}"
    # The updating app: an agent sets table[key] = value for every input record.
    app = _app(app_id, bootstrap, store, workdir / "update")
    table = app.Table("users", default=None, partitions=1, schema=_raw())
    first: list[float] = []
    done = asyncio.Event()

    @app.agent(app.topic(INPUT, schema=_raw(), partitions=1))
    async def update(stream: Any) -> None:
        seen = 0
        async for key, value in stream.items():
            if not first:
                first.append(time.perf_counter())
            table[key] = value
            seen += 1
            if seen == n:
                done.set()

    try:
        await asyncio.wait_for(app.start(), STEP_TIMEOUT_S)
        await asyncio.wait_for(done.wait(), STEP_TIMEOUT_S)
        await asyncio.wait_for(app.producer.flush(), STEP_TIMEOUT_S)
        update_s = time.perf_counter() - first[0]
        changelog = table.changelog_topic.get_topic_name()
    finally:
        await _stop(app)

    # The recovering app: a fresh data directory, the same changelog, an empty source topic.
    app = _app(f"{app_id}-recover", bootstrap, store, workdir / "recover")
    table = app.Table(
        "users", default=None, partitions=1, schema=_raw(),
        changelog_topic=app.topic(changelog, schema=_raw(), partitions=1),
    )  # fmt: skip
    ready = asyncio.Event()

    async def on_ready() -> None:
        ready.set()

    app.on_startup_finished = on_ready

    @app.agent(app.topic(IDLE, schema=_raw(), partitions=1))
    async def idle(stream: Any) -> None:
        async for _ in stream:
            pass

    try:
        t0 = time.perf_counter()
        await asyncio.wait_for(app.start(), STEP_TIMEOUT_S)
        await asyncio.wait_for(ready.wait(), STEP_TIMEOUT_S)
        recover_s = time.perf_counter() - t0
        recovered = len(table)
    finally:
        await _stop(app)
    return {"updates_per_s": n / update_s, "recovery_s": recover_s, "recovered_keys": float(recovered)}


def faust_table(bootstrap: str, n: int, store: str, workdir: Path) -> dict[str, float]:
    """(a) for one store (``memory://`` or ``rocksdb://``), its data under ``workdir``; the input topic
    holds the ``n`` records."""
    datadir = workdir / store.split(":")[0]
    datadir.mkdir()  # Faust creates its data directory, but not the parents
    return asyncio.run(_faust_table(bootstrap, n, store, datadir))


def faust_stores() -> list[str]:
    """The table stores to measure: memory, and rocksdb when faust-streaming can use rocksdict."""
    from faust.stores import rocksdb

    return ["memory://", "rocksdb://"] if rocksdb.USE_ROCKSDICT else ["memory://"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000, help="distinct users (table keys)")
    parser.add_argument("--records", type=int, default=0, help="input records (default: --keys)")
    parser.add_argument("--value-bytes", type=int, default=1024, help="bytes per user state value")
    parser.add_argument("--json", action="store_true", help="also print all figures as one JSON line")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # One "producer buffer full" warning per changelog flush that the agent waits for: thousands.
    logging.getLogger("faust.transport.producer").setLevel(logging.ERROR)
    n = args.records or args.keys

    import faust

    from streams.admin import TopicSpec, create_topics
    from streams.broker import EmbeddedBroker

    figures: dict[str, Any] = {"faust": faust.__version__, "records": n, "keys": args.keys,
                               "value_bytes": args.value_bytes}  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="tide-faust-bench-") as tmp,
        EmbeddedBroker(log_dir=tmp) as broker,
    ):
        bootstrap = broker.bootstrap_servers
        create_topics(bootstrap, [TopicSpec(INPUT), TopicSpec(IDLE)])
        produce(bootstrap, INPUT, n, _records(n, args.keys, args.value_bytes))
        print(
            f"records {n}, keys {args.keys}, value {args.value_bytes} B, faust-streaming {faust.__version__}"
        )
        for store in faust_stores():
            name = f"faust_{store.split(':')[0]}"
            try:
                result = faust_table(bootstrap, n, store, Path(tmp))
            except Exception as exc:  # reported, and (b) still runs
                logger.exception("%s failed", name)
                figures[name] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"{name}: FAILED {type(exc).__name__}: {exc}")
                continue
            figures[name] = result
            print(f"{name} table updates/s (incl. changelog produce): {result['updates_per_s']:,.0f}")
            print(f"{name} table recovery, start to ready: {result['recovery_s']:.2f} s "
                  f"({result['recovered_keys']:,.0f} of {min(n, args.keys):,} keys recovered)")  # fmt: skip
        result = confluent_changelog(bootstrap, n, args.keys, args.value_bytes)
        figures["confluent"] = result
        print(f"confluent changelog produce records/s: {result['produce_records_per_s']:,.0f}")
        print(f"confluent changelog read-back records/s: {result['read_back_records_per_s']:,.0f} "
              f"({result['read_back_s']:.2f} s for {result['read_back_keys']:,.0f} keys)")  # fmt: skip
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
