"""The synthetic catalogue: item text carries the planted topics, and cold items stay out of the early log."""

import json
import math
import re
from collections import Counter
from itertools import chain

import numpy as np
import pytest

from engine.offline.data import read_csv
from engine.offline.synthetic import (
    FILLER_WORDS,
    TOPIC_WORDS,
    CatalogLog,
    catalog_log,
    write_catalog,
    write_log_csv,
)
from schemas import decode_item


@pytest.fixture(scope="module")
def cat() -> CatalogLog:
    return catalog_log(seed=3)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def test_vocabularies_are_distinct_single_words():
    assert len(TOPIC_WORDS) >= 10
    assert all(len(words) >= 20 for words in TOPIC_WORDS.values())
    every = list(chain(*TOPIC_WORDS.values()))
    assert len(every) == len(set(every))  # no word is shared by two topics
    assert len(FILLER_WORDS) >= 25 and not set(FILLER_WORDS) & set(every)
    assert all(re.fullmatch(r"[a-z]+", w) for w in every + list(FILLER_WORDS))


def test_same_seed_same_catalogue_and_log():
    a, b = catalog_log(n_users=30, n_items=60, seed=5), catalog_log(n_users=30, n_items=60, seed=5)
    assert a.items == b.items and a.cold_items == b.cold_items and a.topic_of_user == b.topic_of_user
    for field in ("users", "items", "ts", "event_types"):
        assert np.array_equal(getattr(a.log, field), getattr(b.log, field))
    c = catalog_log(n_users=30, n_items=60, seed=6)
    assert c.items != a.items and not np.array_equal(c.log.items, a.log.items)


def test_shape_times_and_event_types(cat):
    assert len(cat.log) == 200 * 30 and len(cat.items) == 300
    assert [it.item_id for it in cat.items] == [f"c{k}" for k in range(300)]
    assert cat.topics == list(TOPIC_WORDS)[:6]
    assert np.all(np.diff(cat.log.ts) > 0)
    assert not cat.log.event_types.any()  # all "view"
    assert set(cat.topic_of_item.values()) == set(range(6)) and len(cat.topic_of_user) == 200


def test_cold_items_absent_before_the_cold_row_and_present_after(cat):
    per_topic = Counter(cat.topic_of_item[i] for i in cat.cold_items)
    assert per_topic == {t: 10 for t in range(6)}  # 0.2 of the 50 items of each topic
    cold_row = math.ceil(0.8 * len(cat.log))
    cold = set(cat.cold_items)
    assert not cold & set(cat.log.items[:cold_row])
    assert cold <= set(cat.log.items[cold_row:])  # every cold item gets first interactions to score


def test_events_follow_the_users_topic(cat):
    hits: Counter[int] = Counter()
    totals: Counter[int] = Counter()
    for u, i in zip(cat.log.users, cat.log.items, strict=True):
        t = cat.topic_of_user[u]
        totals[t] += 1
        hits[t] += cat.topic_of_item[i] == t
    assert all(hits[t] / totals[t] >= 0.8 for t in totals), {t: hits[t] / totals[t] for t in totals}


def test_warm_popularity_is_skewed_within_a_topic(cat):
    counts = Counter(cat.log.items[: math.ceil(0.8 * len(cat.log))])
    warm0 = [f"c{k}" for k in range(0, 300, 6) if f"c{k}" not in set(cat.cold_items)]
    assert counts[warm0[0]] > 5 * counts[warm0[-1]]


def test_titles_texts_and_attributes_are_written_from_the_topic(cat):
    for it in cat.items:
        name = cat.topics[cat.topic_of_item[it.item_id]]
        own = set(TOPIC_WORDS[name])
        others = set(chain(*TOPIC_WORDS.values())) - own
        title = it.title.split()
        assert 2 <= len(title) <= 4 and all(w[0].isupper() and w.lower() in own for w in title)
        words = _words(it.text)
        assert 12 <= len(it.text.split()) <= 25
        assert {w.lower() for w in title} <= set(words)
        n_topic = sum(w in own for w in words)
        assert n_topic >= 5 and n_topic > sum(w in FILLER_WORDS for w in words)
        assert not others & set(words)
        assert it.attributes["genre"] == name and isinstance(it.attributes["brand"], str)
        assert len(it.attributes["tags"]) == 2 and set(it.attributes["tags"]) <= own
    assert 4 <= len({it.attributes["brand"] for it in cat.items}) <= 10


def test_write_and_read_back(cat, tmp_path):
    write_catalog(cat.items, tmp_path / "items.jsonl")
    lines = (tmp_path / "items.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(cat.items)
    assert all(set(json.loads(line)) == {"item_id", "title", "text", "attributes"} for line in lines)
    assert [decode_item(line.encode()) for line in lines] == cat.items

    write_log_csv(cat.log, tmp_path / "log.csv")
    rows = (tmp_path / "log.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "user,item,ts" and len(rows) == len(cat.log) + 1
    back = read_csv(tmp_path / "log.csv")
    assert np.array_equal(back.users, cat.log.users) and np.array_equal(back.items, cat.log.items)
    assert np.array_equal(back.ts, cat.log.ts)


def test_rejects_more_topics_than_vocabularies():
    with pytest.raises(ValueError, match="n_topics"):
        catalog_log(n_topics=len(TOPIC_WORDS) + 1)
