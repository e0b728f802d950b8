"""Shared fixtures. ``embedded_broker`` starts a real Tansu broker (see streams/broker.py) once per module."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streams.broker import EmbeddedBroker


@pytest.fixture(scope="module")
def embedded_broker() -> Iterator[EmbeddedBroker]:
    """A running in-memory broker on a free loopback port, stopped after the module's tests."""
    with EmbeddedBroker() as broker:
        yield broker
        # Kafka clients still referenced from cycles (a worker and its callbacks) are freed here, while
        # their broker is up; freed later, librdkafka logs "Connection refused" to a broker long gone.
        gc.collect()
