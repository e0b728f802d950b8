"""Catalog stage: keeps the worker's item table in step with the compacted ``tide.items`` topic.

Every worker reads every partition of ``tide.items`` from the beginning: a compacted topic is a
table, and every worker scores against every item. Records are decoded and validated (invalid ones
go to the dead-letter topic), text that changed is encoded in batches (engine/catalog/text.py) in this
thread while the hot path keeps folding, and the changes are applied to the item table under the
engine lock, where a new item becomes recommendable at once (engine/catalog/knowledge.py). Entries (title,
attributes, text digest and vector) are kept in RocksDB, so a restart re-reads the topic without
re-encoding unchanged text. A tombstone (null value) is ignored: an item, once known, stays
scoreable; take it out of recommendations downstream.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from engine.catalog.knowledge import Catalog, CatalogEntry
from engine.catalog.text import TextEncoder
from engine.hooks import FoldHooks, NullHooks
from engine.offline.data import read_catalog
from engine.state.codec import decode_catalog_entry, encode_catalog_entry
from engine.state.store import PartitionStore, new_transaction
from schemas import Item, SchemaError, decode_item
from streams.config import Settings
from streams.liveness import kafka_logger
from streams.runtime import Engine

__all__ = ["CatalogStage", "load_catalog_file", "produce_catalog", "restore_catalog"]

logger = logging.getLogger(__name__)

_ENTRY = b"c/"


def load_catalog_file(path: Path, settings: Settings, device: str) -> tuple[Catalog, int, dict[str, float]]:
    """Read a catalogue file and encode its text: the catalogue, the text width and encoding figures."""
    items = read_catalog(path)
    encoder = TextEncoder(settings.text_model, device=device)
    catalog = Catalog()
    start = time.perf_counter()
    catalog.upsert(items, encoder.encode)
    seconds = time.perf_counter() - start
    figures = {"items": len(catalog), "encode_s": seconds, "items_per_s": len(catalog) / max(seconds, 1e-9)}
    return catalog, encoder.dim, figures


def produce_catalog(settings: Settings, items: list[Item]) -> None:
    """Write catalogue records to the items topic, keyed by item id (the topic is compacted)."""
    producer = Producer(settings.producer_conf())
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(str(err))

    for it in items:
        producer.produce(
            settings.topics.items, it.to_json(), it.item_id.encode("utf-8"), on_delivery=on_delivery
        )
        producer.poll(0)
    producer.flush(30)
    if errors:
        raise KafkaException(f"{len(errors)} catalogue records failed, e.g. {errors[0]}")


def restore_catalog(store: PartitionStore) -> Catalog:
    """The catalogue as last persisted in ``store``."""
    catalog = Catalog()
    for key, value in store.items():
        if key.startswith(_ENTRY):
            title, attrs, digest, vec = decode_catalog_entry(value)
            catalog.restore(key[len(_ENTRY) :].decode("utf-8"), CatalogEntry(title, attrs, digest, vec))
    return catalog


class CatalogStage:
    """Consumes ``tide.items`` into the engine's item table, in its own thread, until ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        dead_letter: Callable[[Message, str, str], None],
        hooks: FoldHooks | None = None,
        encoder_factory: Callable[[], TextEncoder] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.store = engine.store.partition("catalog")
        self.dead_letter = dead_letter
        self.hooks = hooks or NullHooks()
        self.table = engine.items.table
        if self.table.catalog is None:
            self.table.attach_catalog(restore_catalog(self.store))
        self.catalog = self.table.catalog
        align = engine.checkpoint.model.align
        self.text_dim = align.cfg.text_dim if align is not None else 0  # 0: the model reads no text
        self._encoder_factory = encoder_factory or (
            lambda: TextEncoder(
                settings.text_model, device=engine.device
            )
        )
        self._encoder: TextEncoder | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="tide-catalog", daemon=True)
        self.applied = 0  # catalogue records applied (changed entries)
        self.encoded = 0  # texts encoded
        self.caught_up = threading.Event()  # set once the topic has been read to its end once

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self.thread.join(timeout)

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self._encoder is None:
            self._encoder = self._encoder_factory()
        self.encoded += len(texts)
        return self._encoder.encode(texts)

    def apply(self, items: list[Item]) -> list[str]:
        """Apply catalogue records: encode what changed (outside the lock), then update the table."""
        latest = {it.item_id: it for it in items}
        vectors: dict[str, np.ndarray] = {}  # text → its vector
        todo = self.catalog.texts_to_encode(latest.values()) if self.text_dim else []
        if todo:
            t0 = time.perf_counter()
            vectors = dict(zip(todo, self._encode(todo)))
            self.hooks.on_catalog(len(self.catalog), len(todo), time.perf_counter() - t0)

        def precomputed(texts: list[str]) -> np.ndarray:
            return np.stack([vectors[t] for t in texts])

        with self.engine.lock:
            changed = self.catalog.upsert(latest.values(), precomputed if vectors else None)
            if changed:
                self.table.catalog_changed(changed)
        if changed:
            tx = new_transaction()
            for item_id in changed:
                e = self.catalog.entries[item_id]
                entry = encode_catalog_entry(e.title, e.attributes, e.digest, e.text_vec)
                tx.put(_ENTRY + item_id.encode("utf-8"), entry)
            self.store.write(tx)
            self.applied += len(changed)
        self.hooks.on_catalog(len(self.catalog), 0, 0.0)
        return changed

    def _run(self) -> None:
        s = self.settings
        topic = s.topics.items
        consumer = Consumer(
            s.consumer_conf(
                group_id=f"{s.group_id}-catalog", logger=kafka_logger(), **{"enable.auto.commit": False}
            )
        )
        try:
            meta = consumer.list_topics(topic, timeout=10)
            parts = sorted(meta.topics[topic].partitions) if topic in meta.topics else []
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
            while not self._stop.is_set():
                msgs = consumer.consume(num_messages=512, timeout=0.5)
                if msgs:
                    self._process(msgs)
                elif not self.caught_up.is_set():
                    self.caught_up.set()
                    logger.info(
                        "catalogue read: %d items (%d texts encoded)", len(self.catalog), self.encoded
                    )
        except KafkaException as exc:
            logger.error("catalog stage stopped: %s", exc)
        finally:
            consumer.close()

    def _process(self, msgs: list[Message]) -> None:
        items: list[Item] = []
        self.hooks.on_consumed(self.settings.topics.items, len(msgs))
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    logger.warning("catalog consume error: %s", err)
                continue
            if m.value() is None:
                continue  # tombstone
            try:
                items.append(decode_item(m.value()))
            except SchemaError as exc:
                self.dead_letter(m, exc.kind, str(exc))
        if items:
            t0 = time.perf_counter()
            changed = self.apply(items)
            if changed:
                logger.info("catalogue: %d items changed (%.2fs)", len(changed), time.perf_counter() - t0)
