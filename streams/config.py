"""Settings: one frozen object read from ``TIDE_*`` environment variables once, at the entry point.

Only what an operator tunes is a variable; each field's description is its documentation, and
``python -m streams.config`` prints docs/configuration.md from them. Values the processes need but no
deployment should change are constants where they are used. A few fields are constructor arguments only (tests
and benchmarks set them; the environment never does). ``librdkafka()`` builds every Kafka client's
configuration from the connection and security settings, in one place.
"""

from __future__ import annotations

import socket
import types
import typing
import zlib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic.json_schema import JsonDict
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from schemas import Limits

__all__ = ["FETCH_WAIT_MAX_MS", "Settings", "Topics", "markdown"]

#: librdkafka's default (500 ms) lets a broker hold a fetch for half a second when little data is
#: waiting; latency at low rates would be that wait.
FETCH_WAIT_MAX_MS = 10

#: ``json_schema_extra`` of a field that only a constructor argument sets
_ARGUMENT_ONLY: JsonDict = {"env": False}


def _from_env(field: FieldInfo) -> bool:
    return field.json_schema_extra != _ARGUMENT_ONLY


class _Environment(EnvSettingsSource):
    """The environment, for every field but the constructor-only ones."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if not _from_env(field):
            return None, field_name, False
        return super().get_field_value(field, field_name)


class Topics(BaseSettings):
    """Topic names, each from ``TIDE_TOPIC_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="TIDE_TOPIC_", frozen=True)

    interactions: str = Field(default="tide.interactions", description="input: user–item interactions")
    recommendations: str = Field(
        default="tide.recommendations", description="output: each event's recommendations"
    )
    item_updates: str = Field(
        default="tide.item-updates",
        description="each event's user side, for the shared item stage (`TIDE_ITEM_STAGE=shared`)",
    )
    item_state: str = Field(
        default="tide.item-state",
        description="what the shared item stage publishes for every worker's item table (compacted)",
    )
    item_vectors: str = Field(default="tide.item-vectors", description="output: changed item vectors")
    items: str = Field(default="tide.items", description="input: the catalogue (item text and attributes)")
    examples: str = Field(
        default="tide.examples",
        description="online-learning examples, for the fleet learner (`TIDE_LEARNER=fleet`)",
    )
    model: str = Field(
        default="tide.model", description="the fleet learner's published parameters and versions (compacted)"
    )
    user_state: str = Field(
        default="tide.user-state",
        description="the users' state changelog (compacted, partitioned like the interactions)",
    )
    dlq: str = Field(default="tide.dlq", description="output: records not decoded or folded, with the reason")
    workers: str = Field(
        default="tide.workers",
        description="each worker's web URL and input partitions, for the query API's routing (compacted)",
    )
    interest_drift: str = Field(
        default="tide.interest-drift",
        description="output: users whose recent interest moved away from their long-run summary",
    )
    user_deletions: str = Field(default="tide.user-deletions", description="input: users to forget")


class Settings(BaseSettings):
    """Every setting of a TIDE process, each from ``TIDE_<NAME>`` unless it is constructor-only."""

    model_config = SettingsConfigDict(env_prefix="TIDE_", frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _Environment(settings_cls)

    # Kafka
    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Kafka brokers, comma-separated host:port"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="librdkafka `security.protocol`"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="librdkafka `sasl.mechanism`"
    )
    sasl_username: str | None = Field(default=None, description="librdkafka `sasl.username`")
    sasl_password: SecretStr | None = Field(
        default=None, description="librdkafka `sasl.password` (never logged)"
    )
    ssl_ca_location: str | None = Field(
        default=None, description="librdkafka `ssl.ca.location`: the CA certificate file"
    )
    ssl_certificate_location: str | None = Field(
        default=None, description="librdkafka `ssl.certificate.location`: the client certificate file"
    )
    ssl_key_location: str | None = Field(
        default=None, description="librdkafka `ssl.key.location`: the client key file"
    )
    ssl_key_password: SecretStr | None = Field(
        default=None, description="librdkafka `ssl.key.password` (never logged)"
    )
    group_id: str = Field(
        default="tide-worker",
        description="the workers' consumer group (the Faust control app is named after it)",
    )
    worker_id: str | None = Field(
        default=None,
        description="this worker's name in the group, stable across its restarts (its Kafka"
        " `transactional.id` is `<group_id>-<worker_id>`); unset: the host name and the state folder",
    )
    session_timeout_ms: int = Field(
        default=6000,
        description="consumer session timeout: how soon a dead worker's partitions move to another",
    )
    partitions: int = Field(
        default=1, description="partitions of the keyed topics (`tide topics`, `tide broker`)"
    )
    topics: Topics = Field(default_factory=Topics, description="topic names: the `TIDE_TOPIC_*` variables")

    # Worker
    state_dir: Path = Field(default=Path(".tide/state"), description="the worker's RocksDB state")
    checkpoint_dir: Path = Field(
        default=Path(".tide/checkpoints"),
        description="where `tide train` writes checkpoints and the worker finds them",
    )
    checkpoint: Path | None = Field(
        default=None, description="the checkpoint file to serve; unset: the newest in the checkpoint folder"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="`auto`: CUDA when present, else CPU"
    )
    batch_max_events: int = Field(
        default=2000,
        description="the largest micro-batch (a batch is what arrived while the last was folded)",
    )
    top_k: int = Field(default=10, description="items per recommendation")
    index_min_items: int = Field(
        default=10_000, ge=0,
        description="on CPU, catalogues of this many items or more are ranked over candidates from an"
        " approximate index, then scored exactly (engine/fold/candidates.py); smaller ones, and any on a"
        " GPU, are scored exactly",
    )
    index_candidates: int = Field(default=200, ge=1, description="items the candidate index returns per user")
    index_nprobe: int = Field(default=16, ge=1, description="cells of the candidate index searched per user")
    quality_window: int = Field(
        default=10_000, ge=1,
        description="the live-quality gauges cover the last this many judged events and recommendations",
    )
    drift_threshold: float = Field(
        default=0.45, ge=0.0, le=1.0,
        description="distance of a user's recent interest from their long-run summary that is reported"
        " as drift on the interest-drift topic; 0: off",
    )
    drift_min_events: int = Field(
        default=10, ge=1, description="events a user needs before their interest can be reported as drifting"
    )
    web_host: str = Field(
        default="127.0.0.1",
        description="address of the web views and `/metrics` (unauthenticated: loopback by default)",
    )
    web_port: int = Field(default=6066, description="port of the web views and `/metrics`")
    web_url: str | None = Field(
        default=None,
        description="the URL other workers reach this worker's web views at; unset: `http://<web_host>:"
        "<web_port>`, with the host name for a wildcard host",
    )
    item_stage: Literal["local", "shared"] = Field(
        default="local",
        description="`local`: each worker folds the item side of its own partitions; `shared`: one item"
        " stage for the fleet (streams/item_stage.py)",
    )
    learner: Literal["local", "fleet"] = Field(
        default="local",
        description="`local`: each worker learns online on its own copy of the model; `fleet`: one learner"
        " publishes versions every worker switches to (streams/learner.py; needs `TIDE_ITEM_STAGE=shared`)",
    )
    publish_item_vectors: bool = Field(
        default=True, description="publish changed item vectors to their topic"
    )
    log_level: str = Field(default="INFO", description="logging level")
    broker_timeout_s: float = Field(
        default=120.0,
        description="exit (non-zero, with the reason) once the broker has been unreachable this long;"
        " 0: never",
    )

    # Input bounds, applied at decode (docs/input.md); a record outside them goes to the DLQ.
    max_message_bytes: int = Field(default=65_536, description="the largest record value")
    clock_skew_s: float = Field(
        default=300.0, description="how far past the worker's clock an event's timestamp may be"
    )
    max_weight: float = Field(default=1_000.0, description="the largest interaction weight")
    unknown_items: Literal["create", "dead_letter"] = Field(
        default="create",
        description="an interaction with an unknown item: add the item, or dead-letter the record",
    )
    max_items: int = Field(
        default=2_000_000,
        description="the item table's limit; beyond it, records of new items are dead-lettered",
    )
    user_ttl_s: float = Field(
        default=30 * 86_400.0,
        description="forget a user this many seconds of stream time (the partition's latest event) after"
        " their last event; 0: never",
    )

    # Online continual learning in the worker (score first, then learn; engine/fold/online.py)
    online_learning: bool = Field(default=True, description="learn online in the worker")
    online_lr: float = Field(default=1e-4, description="the online learning rate")
    # The worker learns from the same examples, in the same steps, as `tide evaluate`, whose figures then
    # describe it: these two are OnlineConfig's defaults, and only tests change them.
    online_examples_per_step: int = Field(
        default=200, description="examples per online step", json_schema_extra=_ARGUMENT_ONLY
    )
    online_example_rate: float = Field(
        default=0.1, description="the share of events that are examples", json_schema_extra=_ARGUMENT_ONLY
    )
    # The worker's steps run beside the fold; the evaluator's do not, so that its runs repeat exactly.
    online_background: bool = Field(
        default=True,
        description="compute each step's gradient on a thread of its own, beside the fold",
        json_schema_extra=_ARGUMENT_ONLY,
    )

    # Item text
    text_model: Path | None = Field(
        default=None,
        description="a local transformers model folder for item text; unset: the packaged all-MiniLM-L6-v2"
        " (nothing is downloaded)",
    )
    catalog_stage: bool = Field(
        default=True, description="read the items topic into the item table (text, attributes, new items)"
    )

    @model_validator(mode="after")
    def _fleet_learner_needs_the_shared_item_stage(self) -> Settings:
        if self.learner == "fleet" and self.item_stage != "shared":
            raise ValueError(
                "TIDE_LEARNER=fleet needs TIDE_ITEM_STAGE=shared: the learner reads the fleet's item side"
            )
        return self

    def limits(self) -> Limits:
        return Limits(self.max_message_bytes, self.clock_skew_s, self.max_weight)

    def librdkafka(self, **extra: Any) -> dict[str, Any]:
        """Client configuration for confluent-kafka, common to producers, consumers and admin."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers, "security.protocol": self.security_protocol
        }
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
                "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
                # a rebalance moves only the partitions that must move; the others keep being folded
                "partition.assignment.strategy": "cooperative-sticky",
                # what a transaction that never committed wrote is not read (Kafka hides it)
                "isolation.level": "read_committed",
                **extra,
            }
        )

    def wait_s(self) -> float:
        """How long one blocking call to the cluster may wait: ``broker_timeout_s``, or 60 s when that
        is 0 (never give up on the broker, but let each call return)."""
        return self.broker_timeout_s if self.broker_timeout_s > 0 else 60.0

    def transactional_id(self) -> str:
        """The worker's Kafka ``transactional.id``: the same across its restarts, so that a restarted
        worker fences its former self and aborts the transaction it left open."""
        worker = self.worker_id or (
            f"{socket.gethostname()}-{zlib.crc32(str(self.state_dir.resolve()).encode('utf-8')):08x}"
        )
        return f"{self.group_id}-{worker}"

    def producer_conf(self, **extra: Any) -> dict[str, Any]:
        return self.librdkafka(**{"linger.ms": 2, "compression.type": "lz4", "acks": "all", **extra})


_TYPE_NAMES = {
    str: "string", int: "integer", float: "number", bool: "boolean", Path: "path", SecretStr: "secret"
}


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return " \\| ".join(f"`{v}`" for v in typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation) if a is not type(None))
    return _TYPE_NAMES[annotation]


def _default_text(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"


def _rows(model: type[BaseSettings], prefix: str) -> list[str]:
    return [
        f"| `{prefix}{name.upper()}` | {_type_name(f.annotation)} | {_default_text(f.default)} "
        f"| {f.description} |"
        for name, f in model.model_fields.items()
        if _from_env(f) and name != "topics"
    ]


def markdown() -> str:
    """docs/configuration.md: every ``TIDE_*`` variable with its type, default and description."""
    head = [
        "# Configuration",
        "",
        "<!-- Generated from streams/config.py by `python -m streams.config > docs/configuration.md`;",
        "     tests/streams/test_config.py fails when this file and the code differ. -->",
        "",
        "TIDE reads these environment variables once, when a command starts; a command's flags override",
        "some of them for that command. Booleans are `true` or `false`; paths are relative to the working",
        "directory.",
        "",
    ]
    table = ["| Variable | Type | Default | Description |", "|---|---|---|---|"]
    return "\n".join(
        [
            *head,
            "## Settings",
            "",
            *table,
            *_rows(Settings, "TIDE_"),
            "",
            "## Topics",
            "",
            *table,
            *_rows(Topics, "TIDE_TOPIC_"),
            "",
        ]
    )


if __name__ == "__main__":
    print(markdown(), end="")
