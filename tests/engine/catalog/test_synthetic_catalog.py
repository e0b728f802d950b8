"""The synthetic catalogue: item text carries the planted topics (and subtopics, which no attribute names),
cold items stay out of the early log, and habitual users re-use their items at their planted rate."""

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from itertools import chain

import numpy as np
import pytest

from engine.offline.data import read_csv
from engine.offline.synthetic import (
    FILLER_WORDS,
    TOPIC_WORDS,
    CatalogLog,
    catalog_log,
    subtopic_words,
    write_catalog,
    write_log_csv,
)
from schemas import decode_item


@pytest.fixture(scope="module")
def cat() -> CatalogLog:
    return catalog_log(seed=3)


@pytest.fixture(scope="module")
def sub() -> CatalogLog:
    return catalog_log(subtopics=3, seed=3)


@pytest.fixture(scope="module")
def rep() -> CatalogLog:
    return catalog_log(repeat_share=(0.0, 0.8), seed=3)


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


@pytest.mark.parametrize("name", ["cat", "sub"])
def test_titles_texts_and_attributes_are_written_from_the_topic(name, request):
    cat = request.getfixturevalue(name)
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


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"subtopics": 0}, "subtopics"),
        ({"subtopics": 5}, "subtopics"),
        ({"subtopics": 3, "subtopic_focus": 1.5}, "subtopic_focus"),
        ({"repeat_share": (0.6, 0.2)}, "repeat_share"),
        ({"repeat_share": (0.0, 1.2)}, "repeat_share"),
    ],
)
def test_rejects_bad_subtopic_and_repeat_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        catalog_log(n_users=5, n_items=12, **kwargs)


def test_without_subtopics_and_repeats_every_subtopic_and_rate_is_zero(cat):
    assert set(cat.subtopic_of_item.values()) == {0} and len(cat.subtopic_of_item) == 300
    assert set(cat.subtopic_of_user.values()) == {0} and len(cat.subtopic_of_user) == 200
    assert set(cat.repeat_of_user.values()) == {0.0} and len(cat.repeat_of_user) == 200


def test_subtopic_word_groups_split_each_vocabulary():
    for name, words in TOPIC_WORDS.items():
        groups = subtopic_words(name, 3)
        assert len(groups) == 3 and all(len(g) >= 6 for g in groups)
        assert list(chain(*groups)) == list(words)
    assert subtopic_words("chess", 1) == [TOPIC_WORDS["chess"]]


def test_same_seed_same_log_with_subtopics_and_repeats():
    kwargs = {"n_users": 30, "n_items": 60, "subtopics": 3, "repeat_share": (0.1, 0.7), "seed": 5}
    a, b = catalog_log(**kwargs), catalog_log(**kwargs)
    assert a.items == b.items and a.subtopic_of_user == b.subtopic_of_user
    assert a.repeat_of_user == b.repeat_of_user and np.array_equal(a.log.items, b.log.items)


def _loo_accuracy(cl: CatalogLog, features: Callable[[object], set[str]]) -> float:
    """Leave-one-out accuracy of guessing an item's subtopic from the other items of its topic that share
    each of its feature values (each value votes with its subtopic shares)."""
    feats = {it.item_id: features(it) for it in cl.items}
    counts: defaultdict[tuple[int, str], Counter[int]] = defaultdict(Counter)
    for i, values in feats.items():
        for v in values:
            counts[cl.topic_of_item[i], v][cl.subtopic_of_item[i]] += 1
    right = 0
    for i, values in feats.items():
        s = cl.subtopic_of_item[i]
        votes: Counter[int] = Counter()
        for v in values:
            c = counts[cl.topic_of_item[i], v].copy()
            c[s] -= 1
            if total := sum(c.values()):
                votes.update({k: x / total for k, x in c.items()})
        right += max(range(3), key=lambda k: (votes[k], -k)) == s
    return right / len(feats)


def test_the_text_tells_subtopics_apart_and_no_attribute_does():
    cl = catalog_log(n_users=10, n_items=1200, n_topics=4, events_per_user=1, subtopics=3, seed=2)
    assert Counter(cl.subtopic_of_item.values()) == {0: 400, 1: 400, 2: 400}
    for it in cl.items:
        assert set(it.attributes) == {"genre", "brand", "tags"}
        name = cl.topics[cl.topic_of_item[it.item_id]]
        group = set(subtopic_words(name, 3)[cl.subtopic_of_item[it.item_id]])
        assert it.attributes["genre"] == name
        assert {w.lower() for w in it.title.split()} <= group
        topical = [w for w in _words(it.text) if w in TOPIC_WORDS[name]]
        assert sum(w in group for w in topical) >= 0.75 * len(topical)

    def attributes(it):
        return {f"{k}={v}" for k, vs in it.attributes.items() for v in (vs if isinstance(vs, list) else [vs])}

    assert _loo_accuracy(cl, attributes) < 0.4  # chance: 1/3
    assert _loo_accuracy(cl, lambda it: set(_words(it.text))) > 0.95


def test_topical_picks_concentrate_in_the_users_subtopic(sub):
    users = Counter(sub.subtopic_of_user.values())
    assert set(users) == {0, 1, 2} and min(users.values()) > 40
    for k, s in sub.subtopic_of_item.items():
        assert s == (int(k[1:]) // 6) % 3

    def in_own_subtopic(cl: CatalogLog) -> float:
        pairs = [(u, i) for u, i in zip(cl.log.users, cl.log.items, strict=True)
                 if cl.topic_of_item[i] == cl.topic_of_user[u]]  # fmt: skip
        return float(np.mean([cl.subtopic_of_item[i] == cl.subtopic_of_user[u] for u, i in pairs]))

    assert in_own_subtopic(sub) > 0.8  # subtopic_focus 0.8, plus a third of the rest
    assert in_own_subtopic(catalog_log(subtopics=3, subtopic_focus=0.0, seed=3)) < 0.45
    cold_row = math.ceil(0.8 * len(sub.log))
    assert not set(sub.cold_items) & set(sub.log.items[:cold_row])
    assert set(sub.cold_items) <= set(sub.log.items[cold_row:])


def _repeat_shares(cl: CatalogLog) -> dict[str, float]:
    """Per user: the share of their events after the first whose item they had used before."""
    seen: defaultdict[str, set[str]] = defaultdict(set)
    repeats: Counter[str] = Counter()
    events: Counter[str] = Counter()
    for u, i in zip(cl.log.users, cl.log.items, strict=True):
        if seen[u]:
            events[u] += 1
            repeats[u] += i in seen[u]
        seen[u].add(i)
    return {u: repeats[u] / events[u] for u in events}


def test_users_repeat_their_items_at_their_planted_rate(rep):
    rate = np.array([rep.repeat_of_user[f"u{u}"] for u in range(200)])
    assert rate.min() >= 0.0 and rate.max() <= 0.8 and rate.std() > 0.15  # uniform on [0, 0.8]: 0.23
    shares = _repeat_shares(rep)
    observed = np.array([shares[f"u{u}"] for u in range(200)])
    base = np.mean(list(_repeat_shares(catalog_log(seed=3)).values()))  # items re-picked by chance
    expected = rate + (1 - rate) * base
    assert np.corrcoef(rate, observed)[0, 1] > 0.7
    for lo in (0.0, 0.2, 0.4, 0.6):
        band = (rate >= lo) & (rate < lo + 0.2)
        assert abs(observed[band].mean() - expected[band].mean()) < 0.1, lo
    low, high = observed[rate < 0.2].mean(), observed[rate >= 0.6].mean()
    assert high - low > 0.5 * (1 - base) * 0.6  # the planted gap, 0.6 in rate, seen through fresh picks


def test_repeats_keep_rounds_times_and_cold_items(rep):
    n_users = 200
    assert len(rep.log) == n_users * 30 and np.array_equal(rep.log.ts, np.arange(1.0, len(rep.log) + 1))
    for r in range(30):
        assert len(set(rep.log.users[r * n_users : (r + 1) * n_users])) == n_users
    cold_row = math.ceil(0.8 * len(rep.log))
    assert not set(rep.cold_items) & set(rep.log.items[:cold_row])
    assert set(rep.cold_items) <= set(rep.log.items[cold_row:])
