"""The catalog stage against the real embedded broker and RocksDB: catalogue records in, new items
recommendable, bad records to the DLQ, and no re-encoding after a restart."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from engine.alignment import AlignTrainConfig, fit_alignment
from engine.catalog import Catalog
from engine.checkpoint import save_checkpoint
from engine.data import InteractionLog
from engine.text import TextEncoder
from engine.train import TrainConfig, train
from schemas import Item
from streams.runtime import load_engine
from streams.worker import Worker
from tests.integration.conftest import N_ITEMS, drain, produce, synthetic_events

pytestmark = pytest.mark.integration

GENRES = ["jazz", "football", "astronomy", "gardening"]
WORDS = {
    "jazz": "saxophone trumpet swing improvisation quartet",
    "football": "goal striker penalty stadium league",
    "astronomy": "telescope galaxy orbit comet nebula",
    "gardening": "compost seedlings pruning roses soil",
}


def _items() -> list[Item]:
    out = []
    for k in range(N_ITEMS):
        g = GENRES[k % len(GENRES)]
        out.append(Item(f"item-{k}", f"{g.title()} {k}", f"All about {WORDS[g]}.", {"genre": g, "tags": [g[:3]]}))
    out.append(Item("new-1", "Late Night Jazz", f"Brand new: {WORDS['jazz']}.", {"genre": "jazz"}))
    return out


@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory):
    ev = synthetic_events(10, 30)
    log = InteractionLog(
        np.array([e.user_id for e in ev], dtype=object), np.array([e.item_id for e in ev], dtype=object),
        np.array([e.timestamp for e in ev]), np.array([e.event_type_id for e in ev]),
    )
    encoder = TextEncoder()
    res = train(log, TrainConfig(epochs=1, batch_size=50, dim=16, profile_items=8, content_dim=8, text_dim=encoder.dim))
    catalog = Catalog()
    catalog.upsert(_items()[:-1], encoder.encode)
    fit_alignment(res.model, res.item_ids, catalog, AlignTrainConfig(steps=50))
    d = tmp_path_factory.mktemp("text-checkpoints")
    save_checkpoint(d, res.model, res.item_ids, {})
    return d


def _run_worker(settings):
    worker = Worker(settings, load_engine(settings))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


def _wait(cond, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.1)


def test_catalogue_items_join_the_table_and_survive_a_restart(settings, text_checkpoint):
    settings = settings.model_copy(update={"checkpoint_dir": text_checkpoint})
    items = _items()
    bad = [(b"broken", b'{"item_id": "broken"}')]  # no title
    produce(settings, settings.topics.items, [(it.item_id.encode(), it.to_json()) for it in items] + bad)
    worker, thread = _run_worker(settings)
    try:
        _wait(lambda: worker.catalog.caught_up.is_set() and worker.catalog.applied >= len(items))
        table = worker.engine.items.table
        row = table.index["new-1"]  # a new item: in the table before anyone has used it
        assert table.knowledge[row].abs().sum() > 0 and table.title(row) == "Late Night Jazz"
        assert worker.catalog.encoded == len(items)
        dlq = drain(settings, settings.topics.dlq, lambda m: len(m) >= 1)
        assert json.loads(dlq[0].value())["error_kind"] == "missing_field"
    finally:
        worker.stop()
        thread.join(30)
        worker.engine.close()
    again, thread = _run_worker(settings)
    try:
        _wait(lambda: again.catalog.caught_up.is_set())
        assert again.catalog.encoded == 0  # unchanged text is not encoded again
        assert again.engine.items.table.title(again.engine.items.table.index["new-1"]) == "Late Night Jazz"
        changed = Item("new-1", "Late Night Jazz", "Now with a new description of swing and saxophone.", {"genre": "jazz"})
        produce(settings, settings.topics.items, [(b"new-1", changed.to_json())])
        _wait(lambda: again.catalog.encoded == 1)  # only the changed text
    finally:
        again.stop()
        thread.join(30)
        again.engine.close()
