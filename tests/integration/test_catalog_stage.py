"""The catalog stage against the real embedded broker and RocksDB: catalogue records in, new items
recommendable, bad records to the DLQ, and no re-encoding after a restart."""

from __future__ import annotations

import json

import pytest

from engine.catalog.alignment import AlignTrainConfig, fit_alignment
from engine.catalog.knowledge import Catalog
from engine.catalog.text import TextEncoder
from engine.checkpoint import save_checkpoint
from engine.offline.train import TrainConfig, train
from schemas import Item
from tests.integration.conftest import (
    N_ITEMS,
    drain,
    events_log,
    produce,
    start_worker,
    synthetic_events,
    wait_for,
)

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
        out.append(
            Item(f"item-{k}", f"{g.title()} {k}", f"All about {WORDS[g]}.", {"genre": g, "tags": [g[:3]]})
        )
    out.append(Item("new-1", "Late Night Jazz", f"Brand new: {WORDS['jazz']}.", {"genre": "jazz"}))
    return out


@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory):
    log = events_log(synthetic_events(10, 30))
    encoder = TextEncoder()
    res = train(
        log,
        TrainConfig.of(
            epochs=1, min_steps=0, batch_size=50, dim=16, profile_items=8, content_dim=8, text_dim=encoder.dim
        ),
    )
    catalog = Catalog()
    catalog.upsert(_items()[:-1], encoder.encode)
    fit_alignment(res.model, res.item_ids, catalog, AlignTrainConfig(steps=50))
    d = tmp_path_factory.mktemp("text-checkpoints")
    save_checkpoint(d, res.model, res.item_ids, {})
    return d


def test_catalogue_items_join_the_table_and_survive_a_restart(settings, text_checkpoint):
    settings = settings.model_copy(update={"checkpoint_dir": text_checkpoint})
    items = _items()
    bad = [(b"broken", b'{"item_id": "broken"}')]  # no title
    produce(settings, settings.topics.items, [(it.item_id.encode(), it.to_json()) for it in items] + bad)
    worker, thread = start_worker(settings)
    try:
        wait_for(
            lambda: worker.catalog.caught_up.is_set() and worker.catalog.applied >= len(items),
            60,
            "catalogue not applied",
        )
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
    again, thread = start_worker(settings)
    try:
        wait_for(again.catalog.caught_up.is_set, 60, "catalogue not re-read")
        assert again.catalog.encoded == 0  # unchanged text is not encoded again
        assert again.engine.items.table.title(again.engine.items.table.index["new-1"]) == "Late Night Jazz"
        changed = Item(
            "new-1",
            "Late Night Jazz",
            "Now with a new description of swing and saxophone.",
            {"genre": "jazz"},
        )
        produce(settings, settings.topics.items, [(b"new-1", changed.to_json())])
        wait_for(lambda: again.catalog.encoded == 1, 60, "changed text not encoded")  # only it
    finally:
        again.stop()
        thread.join(30)
        again.engine.close()
