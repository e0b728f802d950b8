"""The topics TIDE reads and writes, with their partitioning and retention policies."""

from __future__ import annotations

from streams.admin import TopicSpec
from streams.config import Settings

__all__ = ["topic_specs"]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    t, n = settings.topics, settings.partitions
    return [
        TopicSpec(t.interactions, partitions=n),
        TopicSpec(t.recommendations, partitions=n),
        # the shared item stage: one partition, one event clock (streams/item_stage.py)
        TopicSpec(t.item_updates, partitions=1),
        TopicSpec(t.item_state, partitions=1, compacted=True),
        # the fleet learner: one partition, one member learning (streams/learner.py)
        TopicSpec(t.examples, partitions=1),
        TopicSpec(t.model, partitions=1, compacted=True),
        TopicSpec(t.item_vectors, partitions=1, compacted=True),
        TopicSpec(t.items, partitions=1, compacted=True),
        # the users' state changelog: partition p holds the state of the users of interactions partition p
        TopicSpec(t.user_state, partitions=n, compacted=True),
        TopicSpec(t.dlq, partitions=1),
        TopicSpec(t.interest_drift, partitions=n),
        # the query API's routing: each worker's URL and partitions (streams/fleet.py)
        TopicSpec(t.workers, partitions=1, compacted=True),
        # deletion requests: `tide forget` writes one to every partition, so the worker holding the user's
        # state receives it whichever partitioner the interactions' producers use
        TopicSpec(t.user_deletions, partitions=n),
    ]
