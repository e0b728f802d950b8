"""Synthetic interaction logs with known, drifting user interests, for tests and experiments.

Items are split into ``n_topics`` topics. Each user starts interested in one topic and, at a planted
time, moves to another (a share ``drift_share`` of the users does; the others keep their topic); each
event picks an item from the current topic (popular items within a
topic more often) with probability ``focus``, otherwise any item.

:func:`catalog_log` adds item text: a catalogue whose titles and descriptions are written from the
vocabulary of each item's topic, with a share of items held out of the early log, for cold-start tests.
Optionally each topic has subtopics that only the text tells apart (the attributes name the topic alone),
and users re-use their own recent items at a planted per-user rate.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.offline.data import InteractionLog
from schemas import Item

__all__ = [
    "FILLER_WORDS",
    "TOPIC_WORDS",
    "CatalogLog",
    "DriftingLog",
    "catalog_log",
    "drifting_log",
    "subtopic_words",
    "write_catalog",
    "write_log_csv",
]


@dataclass(frozen=True)
class DriftingLog:
    log: InteractionLog
    topic_of_item: dict[str, int]
    before: dict[str, int]  # user → topic before the drift
    after: dict[str, int]  # user → topic after the drift (the same topic: no drift planted)
    drift_time: float


def drifting_log(
    n_users: int = 60,
    n_items: int = 120,
    n_topics: int = 6,
    events_per_user: int = 40,
    drift_at: float = 0.5,
    focus: float = 0.9,
    seed: int = 0,
    drift_share: float = 1.0,
) -> DriftingLog:
    rng = np.random.default_rng(seed)
    topic = np.arange(n_items) % n_topics
    members = [np.nonzero(topic == t)[0] for t in range(n_topics)]
    within = [1.0 / np.arange(1, len(m) + 1) for m in members]  # Zipf-like popularity within a topic
    within = [w / w.sum() for w in within]
    before = rng.integers(n_topics, size=n_users)
    after = (before + rng.integers(1, n_topics, size=n_users)) % n_topics  # always a different topic
    if drift_share < 1.0:
        stays = rng.random(n_users) >= drift_share
        after = np.where(stays, before, after)
    n = n_users * events_per_user
    drift_time = drift_at * n
    users, items, ts = [], [], []
    clock = 0.0
    for _ in range(events_per_user):
        for u in rng.permutation(n_users):
            clock += 1.0
            t = before[u] if clock < drift_time else after[u]
            i = rng.choice(members[t], p=within[t]) if rng.random() < focus else rng.integers(n_items)
            users.append(f"u{u}")
            items.append(f"i{i}")
            ts.append(clock)
    log = InteractionLog(
        np.asarray(users, dtype=object), np.asarray(items, dtype=object), np.asarray(ts),
        np.zeros(n, np.int64),
    )
    return DriftingLog(
        log,
        {f"i{i}": int(topic[i]) for i in range(n_items)},
        {f"u{u}": int(before[u]) for u in range(n_users)},
        {f"u{u}": int(after[u]) for u in range(n_users)},
        drift_time,
    )


_VOCABULARY = {
    "cooking": (
        "recipe garlic basil oven roasting simmering sauce onion pasta butter flour dough skillet spices "
        "broth chef kitchen baking tomato pepper marinade dessert salad cinnamon knife"
    ),
    "football": (
        "goalkeeper striker penalty stadium referee midfielder tackle corner offside league match goal "
        "defender dribbling fans coach pitch kickoff header tournament winger transfer captain halftime "
        "football"
    ),
    "astronomy": (
        "telescope galaxy nebula planet orbit comet asteroid stars moon eclipse constellation supernova "
        "observatory cosmos meteor astronomer satellite jupiter saturn gravity spacecraft quasar lightyear "
        "solar universe"
    ),
    "jazz music": (
        "saxophone trumpet improvisation swing bebop pianist chords melody rhythm drummer bassist blues "
        "ensemble solo quartet jazz trombone groove syncopation musicians nightclub harmony album vocalist "
        "tempo"
    ),
    "gardening": (
        "soil compost seedlings pruning tulips roses mulch shovel greenhouse watering weeds vegetables "
        "perennials fertilizer garden hedge flowerbed bulbs seeds trowel lawn shrubs gardener orchard herbs"
    ),
    "computer programming": (
        "compiler function variable debugging algorithm python code software syntax loop database programmer "
        "library recursion framework refactoring repository bugs javascript runtime interface testing "
        "developer git programming"
    ),
    "medicine": (
        "doctor patient diagnosis vaccine surgery hospital symptoms treatment nurse prescription therapy "
        "clinic infection antibiotics cardiology blood dosage physician immune disease chronic fever "
        "medication clinical medicine"
    ),
    "sailing": (
        "sailboat mast keel hull rudder anchor harbor regatta sails wind tacking crew yacht deck knots jib "
        "mooring navigation skipper buoy ocean marina voyage dinghy sailing"
    ),
    "photography": (
        "camera lens aperture shutter exposure tripod portrait landscape photographer zoom flash lighting "
        "darkroom film pixels sensor composition snapshot photo studio bokeh viewfinder autofocus negatives "
        "photography"
    ),
    "chess": (
        "grandmaster checkmate bishop knight rook pawn queen king opening endgame gambit castling blitz "
        "chessboard stalemate sacrifice zugzwang pieces moves tactics sicilian opponent checks fianchetto "
        "chess"
    ),
    "hiking": (
        "trail backpack summit boots mountain campsite tent ridge valley canyon waterfall compass map "
        "altitude hiker trek pine forest glacier peak wilderness lantern cliff footpath hiking"
    ),
    "investing": (
        "stocks bonds portfolio dividend investor shares market interest inflation savings budget mortgage "
        "loan bank tax retirement equity broker fund currency credit profit pension accounting investing"
    ),
}
#: Topic name → its vocabulary: single lowercase words, no word shared between topics or with the filler.
TOPIC_WORDS: dict[str, tuple[str, ...]] = {name: tuple(words.split()) for name, words in _VOCABULARY.items()}

_FILLER_ADJECTIVES = (
    "practical", "simple", "everyday", "complete", "classic", "modern", "popular", "short", "detailed",
    "friendly", "easy", "essential", "weekly", "updated", "original", "handy", "quick", "thorough", "useful",
    "clear",
)  # fmt: skip
_FILLER_SINGULAR = ("guide", "introduction", "handbook", "companion", "primer")
_FILLER_PLURAL = ("notes", "ideas", "tips", "stories", "advice", "lessons", "examples")
#: Neutral words shared by every topic's descriptions.
FILLER_WORDS: tuple[str, ...] = _FILLER_ADJECTIVES + _FILLER_SINGULAR + _FILLER_PLURAL

_BRANDS = ("Northwind", "Bluepeak", "Acorn", "Lumen", "Vesta", "Orbis", "Kestrel", "Tandem")

# {t} topic word, {a}/{A} filler adjective (lower/capitalised), {n}/{p} singular/plural filler noun, so that
# the text reads as English to a sentence encoder. An opening (6–9 words), a body (8–11) and a closing (0–5)
# keep every text within 14–25 words, with at least 5 topic words and at most 4 filler words.
_OPENINGS = (
    "The {a} {n} to {t}, {t} and {t}.",
    "This {a} {n} covers {t}, {t} and {t}.",
    "{A} {p} on {t} and {t}.",
    "Everything about {t} and {t} in one {a} {n}.",
)
_BODIES = (
    "It includes {t}, {t} and {t}, plus {a} {p} on {t}.",
    "Learn about {t} and {t}, then explore {t} and {t}.",
    "Featuring {t}, {t} and {t}, with {a} {p}.",
    "Read about {t}, {t}, {t} and {t} in {a} detail.",
)
_CLOSINGS = ("", "Perfect for {t} lovers.", "Great for {t} and {t}.")
_SLOT = re.compile(r"\{([tanpA])\}")

# In the final part each topic's cold items together take this share of the topic's picks, spread evenly:
# new items are in fashion, so every one of them gets first interactions for a cold-start evaluation to score.
_COLD_MASS = 0.5
# Fewest words in a subtopic's group: a text's first 6 topic words (title, most of the body) are its own.
_MIN_GROUP = 6
# A repeat re-picks one of the user's last this many distinct items.
_RECENT = 10

_Table = tuple[np.ndarray, np.ndarray]  # candidate item indices, their probabilities


@dataclass(frozen=True)
class CatalogLog:
    items: list[Item]
    log: InteractionLog
    topic_of_item: dict[str, int]
    topic_of_user: dict[str, int]
    topics: list[str]  # topic id → name
    cold_items: list[str]  # absent from rows before ``ceil(cold_from * len(log))``
    subtopic_of_item: dict[str, int] = field(default_factory=dict)  # within the item's topic; 0 if none
    subtopic_of_user: dict[str, int] = field(default_factory=dict)  # within the user's topic; 0 if none
    repeat_of_user: dict[str, float] = field(default_factory=dict)  # r_u; 0 without ``repeat_share``


def subtopic_words(topic: str, subtopics: int) -> list[tuple[str, ...]]:
    """``TOPIC_WORDS[topic]`` cut into ``subtopics`` disjoint, contiguous groups of near-equal size."""
    words = TOPIC_WORDS[topic]
    bounds = np.linspace(0, len(words), subtopics + 1).round().astype(int)
    return [words[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _describe(rng: np.random.Generator, words: list[str]) -> str:
    """Fill one opening, body and closing with ``words`` (topic words, in order) and random filler."""
    topic_words = iter(words)

    def fill(m: re.Match[str]) -> str:
        slot = m.group(1)
        if slot == "t":
            return next(topic_words)
        if slot in "np":
            return str(rng.choice(_FILLER_SINGULAR if slot == "n" else _FILLER_PLURAL))
        adjective = str(rng.choice(_FILLER_ADJECTIVES))
        return adjective.capitalize() if slot == "A" else adjective

    parts = [str(rng.choice(t)) for t in (_OPENINGS, _BODIES, _CLOSINGS)]
    return " ".join(_SLOT.sub(fill, p) for p in parts if p)


def _make_item(rng: np.random.Generator, k: int, topic: str, group: tuple[str, ...] | None = None) -> Item:
    """Item ``c{k}``. With a subtopic ``group``, the title and text take the group's words first, then other
    words of the topic, and the tags come from the whole topic, independently of the group."""
    vocabulary = TOPIC_WORDS[topic]
    if group is None:
        words = [str(w) for w in rng.permutation(vocabulary)[:9]]  # 9 = most {t} slots in one text
    else:
        rest = [w for w in vocabulary if w not in group]
        words = [str(w) for w in [*rng.permutation(group), *rng.permutation(rest)][:9]]
    title = " ".join(w.capitalize() for w in words[: int(rng.integers(2, 5))])
    tags = [str(w) for w in rng.choice(words[:6] if group is None else vocabulary, 2, replace=False)]
    attributes = {"genre": topic, "brand": str(rng.choice(_BRANDS)), "tags": tags}
    return Item(item_id=f"c{k}", title=title, text=_describe(rng, words), attributes=attributes)


def _tables(warm: np.ndarray, cold: np.ndarray) -> tuple[_Table, _Table]:
    """Picks among ``warm`` (Zipf-like, id order) before the cold row, and from it on with ``_COLD_MASS``
    spread evenly over ``cold``."""
    zipf = 1.0 / np.arange(1, len(warm) + 1)
    zipf /= zipf.sum()
    if not len(cold):
        return (warm, zipf), (warm, zipf)
    p = np.concatenate([(1.0 - _COLD_MASS) * zipf, np.full(len(cold), _COLD_MASS / len(cold))])
    return (warm, zipf), (np.concatenate([warm, cold]), p)


def catalog_log(
    n_users: int = 200,
    n_items: int = 300,
    n_topics: int = 6,
    events_per_user: int = 30,
    cold_share: float = 0.2,
    cold_from: float = 0.8,
    focus: float = 0.9,
    seed: int = 0,
    subtopics: int = 1,
    subtopic_focus: float = 0.8,
    repeat_share: tuple[float, float] | None = None,
) -> CatalogLog:
    """A text catalogue and an interaction log whose planted user interests are the items' topics.

    Item ``c{k}`` has topic ``k mod n_topics`` and subtopic ``σ(k) = ⌊k / n_topics⌋ mod subtopics``; its
    title and text are drawn from that topic's vocabulary, from the words of group ``σ(k)`` of
    :func:`subtopic_words` first, and its tags from the whole topic's vocabulary; its attributes name the
    topic (``genre``), never the subtopic. ``round(cold_share · m_t)`` random items of each topic (of
    ``m_t``) are cold: available only from row ``ceil(cold_from · E)`` on. Each user has a topic ``τ(u)``,
    a subtopic ``σ(u)`` (uniform; 0 with one subtopic) and a repeat rate ``r_u`` (uniform in
    ``repeat_share``; 0 without it); with ``A`` the items available at the event's row and ``R_u`` the user's
    last 10 distinct items, an event picks

    .. math:: P(i \\mid u) = r_u \\frac{[i \\in R_u]}{|R_u|} + (1 - r_u) \\Big(\\text{focus} \\cdot
              \\big((1 - s) \\, p_{\\tau(u)}(i) + s \\, p_{\\tau(u), \\sigma(u)}(i)\\big)
              + \\frac{1 - \\text{focus}}{|A|}\\Big), \\quad i \\in A,

    with ``r_u = 0`` while ``R_u`` is empty and ``s = subtopic_focus`` (0 with one subtopic), where ``p_t``
    is Zipf-like (``∝ 1/rank``, id order) over topic ``t``'s warm items and, in the final part, gives
    ``_COLD_MASS`` to ``t``'s cold items, evenly; ``p_{t,σ}`` is the same over the items of subtopic ``σ``
    (``p_t`` when the subtopic has no warm item). Users are interleaved in random order, one event per
    user per round, 1 s apart; all events are views. Without subtopics and ``repeat_share`` no random
    number is drawn for either, so such a log is the same as one made before they existed.
    """
    if not 1 <= n_topics <= len(TOPIC_WORDS):
        raise ValueError(f"n_topics must be in 1..{len(TOPIC_WORDS)}, got {n_topics}")
    if n_items < n_topics:
        raise ValueError(f"need at least one item per topic: n_items={n_items} < n_topics={n_topics}")
    if not (0.0 <= cold_share < 1.0 and 0.0 <= cold_from <= 1.0):
        raise ValueError("need 0 <= cold_share < 1 and 0 <= cold_from <= 1")
    most = min(len(w) for w in TOPIC_WORDS.values()) // _MIN_GROUP
    if not 1 <= subtopics <= most:
        raise ValueError(f"subtopics must be in 1..{most}, got {subtopics}")
    if not 0.0 <= subtopic_focus <= 1.0:
        raise ValueError(f"subtopic_focus must be in [0, 1], got {subtopic_focus}")
    if repeat_share is not None and not 0.0 <= repeat_share[0] <= repeat_share[1] <= 1.0:
        raise ValueError(f"repeat_share must be (lo, hi) with 0 <= lo <= hi <= 1, got {repeat_share}")
    rng = np.random.default_rng(seed)
    topics = list(TOPIC_WORDS)[:n_topics]
    topic = np.arange(n_items) % n_topics
    sub = (np.arange(n_items) // n_topics) % subtopics
    groups = {name: subtopic_words(name, subtopics) for name in topics} if subtopics > 1 else None
    items = [
        _make_item(rng, k, topics[topic[k]], groups[topics[topic[k]]][sub[k]] if groups else None)
        for k in range(n_items)
    ]

    is_cold = np.zeros(n_items, dtype=bool)
    early: list[_Table] = []  # per topic: picks before the cold row
    late: list[_Table] = []  # per topic: picks from the cold row on
    for t in range(n_topics):
        members = np.nonzero(topic == t)[0]
        n_cold = min(round(cold_share * len(members)), len(members) - 1)  # keep a warm item to pick early
        is_cold[rng.choice(members, n_cold, replace=False)] = True
        e, f = _tables(members[~is_cold[members]], members[is_cold[members]])
        early.append(e)
        late.append(f)
    early_sub: list[list[_Table]] = [[] for _ in range(n_topics)]  # per topic and subtopic
    late_sub: list[list[_Table]] = [[] for _ in range(n_topics)]
    for t in range(n_topics):
        for s in range(subtopics if subtopics > 1 else 0):
            members = np.nonzero((topic == t) & (sub == s))[0]
            warm, cold = members[~is_cold[members]], members[is_cold[members]]
            e, f = _tables(warm, cold) if len(warm) else (early[t], late[t])
            early_sub[t].append(e)
            late_sub[t].append(f)
    all_warm = np.nonzero(~is_cold)[0]
    all_items = np.arange(n_items)

    user_topic = rng.integers(n_topics, size=n_users)
    user_sub = rng.integers(subtopics, size=n_users) if subtopics > 1 else np.zeros(n_users, np.int64)
    repeats = repeat_share is not None
    rate = rng.uniform(*repeat_share, size=n_users) if repeat_share is not None else np.zeros(n_users)
    recent: list[list[int]] = [[] for _ in range(n_users)]  # distinct items, most recent last
    n = n_users * events_per_user
    cold_row = math.ceil(cold_from * n)
    users, picked, ts = [], [], []
    row = 0
    for _ in range(events_per_user):
        for u in rng.permutation(n_users):
            in_final = row >= cold_row
            past = recent[u]
            if repeats and past and rng.random() < rate[u]:
                i = past[int(rng.integers(len(past)))]
            elif rng.random() < focus:
                if subtopics > 1 and rng.random() < subtopic_focus:
                    candidates, p = (late_sub if in_final else early_sub)[user_topic[u]][user_sub[u]]
                else:
                    candidates, p = (late if in_final else early)[user_topic[u]]
                i = int(rng.choice(candidates, p=p))
            else:
                i = int(rng.choice(all_items if in_final else all_warm))
            if repeats:
                if i in past:
                    past.remove(i)
                past.append(i)
                del past[:-_RECENT]
            row += 1
            users.append(f"u{u}")
            picked.append(f"c{i}")
            ts.append(float(row))
    events = np.asarray(users, dtype=object), np.asarray(picked, dtype=object), np.asarray(ts)
    log = InteractionLog(*events, np.zeros(n, np.int64))
    return CatalogLog(
        items=items,
        log=log,
        topic_of_item={f"c{k}": int(topic[k]) for k in range(n_items)},
        topic_of_user={f"u{u}": int(user_topic[u]) for u in range(n_users)},
        topics=topics,
        cold_items=[f"c{k}" for k in np.nonzero(is_cold)[0]],
        subtopic_of_item={f"c{k}": int(sub[k]) for k in range(n_items)},
        subtopic_of_user={f"u{u}": int(user_sub[u]) for u in range(n_users)},
        repeat_of_user={f"u{u}": float(rate[u]) for u in range(n_users)},
    )


def write_catalog(items: list[Item], path: str | Path) -> None:
    """Write one JSON object per line: ``item_id``, ``title``, ``text``, ``attributes``."""
    with open(path, "w", encoding="utf-8") as f:
        for it in items:
            attributes = dict(it.attributes)  # json cannot encode a read-only Mapping
            record = {"item_id": it.item_id, "title": it.title, "text": it.text, "attributes": attributes}
            f.write(json.dumps(record) + "\n")


def write_log_csv(log: InteractionLog, path: str | Path) -> None:
    """Write ``user,item,ts`` with a header, one row per event (readable by
    :func:`engine.offline.data.read_csv`)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["user", "item", "ts"])
        writer.writerows(zip(log.users, log.items, (repr(float(t)) for t in log.ts), strict=True))
