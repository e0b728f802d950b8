"""Settings: what the environment sets and what it cannot, the generated configuration reference, the
Kafka client configurations built from the settings, and training configs read from JSON."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from streams.config import FETCH_WAIT_MAX_MS, Settings, markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

SECURITY_KEYS = {
    "sasl.mechanism", "sasl.username", "sasl.password", "ssl.ca.location", "ssl.certificate.location",
    "ssl.key.location", "ssl.key.password",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TIDE_* variable of the machine running the tests reaches them."""
    for name in list(os.environ):
        if name.startswith("TIDE_"):
            monkeypatch.delenv(name)


def test_docs_configuration_md_is_generated_from_the_code() -> None:
    assert DOC.read_text() == markdown(), (
        "docs/configuration.md differs from the settings; regenerate it: "
        "`python -m streams.config > docs/configuration.md`"
    )


def test_every_documented_variable_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    documented = [line.split("`")[1] for line in markdown().splitlines() if line.startswith("| `TIDE_")]
    assert len(documented) == len(set(documented)) > 30
    monkeypatch.setenv("TIDE_TOP_K", "7")
    monkeypatch.setenv("TIDE_ONLINE_LEARNING", "false")
    monkeypatch.setenv("TIDE_TOPIC_DLQ", "my.dlq")
    monkeypatch.setenv("TIDE_SASL_PASSWORD", "pw")
    s = Settings()
    assert (s.top_k, s.online_learning, s.topics.dlq) == (7, False, "my.dlq")
    assert s.sasl_password is not None and s.sasl_password.get_secret_value() == "pw"


def test_constructor_only_fields_ignore_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDE_ONLINE_EXAMPLE_RATE", "0.5")
    monkeypatch.setenv("TIDE_ONLINE_EXAMPLES_PER_STEP", "not a number")
    monkeypatch.setenv("TIDE_ONLINE_BACKGROUND", "false")
    s = Settings()
    assert (s.online_example_rate, s.online_examples_per_step, s.online_background) == (0.1, 200, True)
    t = Settings(online_example_rate=1.0, online_examples_per_step=20)
    assert (t.online_example_rate, t.online_examples_per_step) == (1.0, 20)
    assert Settings(**t.model_dump()) == t  # how the crash tests hand settings to a worker process
    assert "TIDE_ONLINE_EXAMPLE_RATE" not in markdown()


def test_the_worker_learns_as_the_evaluator_does() -> None:
    from engine.fold.online import OnlineConfig

    s, evaluator = Settings(), OnlineConfig()
    assert (s.online_examples_per_step, s.online_example_rate) == (
        evaluator.examples_per_step, evaluator.example_rate
    )


def test_fixed_values_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.catalog.text import BATCH_SIZE, TextEncoder

    monkeypatch.setenv("TIDE_POLL_TIMEOUT_MS", "5")
    monkeypatch.setenv("TIDE_APP_ID", "other")
    s = Settings(group_id="g")
    for name in ("poll_timeout_ms", "app_id", "torch_threads", "text_batch_size", "item_vector_interval_ms"):
        assert not hasattr(s, name), name  # constants where they are used, not settings
    assert inspect.signature(TextEncoder).parameters["batch_size"].default == BATCH_SIZE
    with pytest.raises(ValidationError):
        Settings(app_id="x")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Settings(data="x.csv")  # type: ignore[call-arg]


def test_librdkafka_has_security_options_only_when_set() -> None:
    conf = Settings(bootstrap_servers="k1:9093,k2:9093").librdkafka()
    assert conf == {"bootstrap.servers": "k1:9093,k2:9093", "security.protocol": "PLAINTEXT"}
    assert not SECURITY_KEYS & set(conf)


def test_librdkafka_unwraps_secrets_and_extras_override() -> None:
    s = Settings(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="svc",
        sasl_password=SecretStr("s3cret-pw"), ssl_ca_location="/ca.pem", ssl_key_location="/k.pem",
        ssl_key_password=SecretStr("s3cret-kpw"),
    )
    conf = s.librdkafka(**{"security.protocol": "SSL", "client.id": "x"})
    assert conf == {
        "bootstrap.servers": "127.0.0.1:9092", "security.protocol": "SSL",
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "svc", "sasl.password": "s3cret-pw",
        "ssl.ca.location": "/ca.pem",
        "ssl.key.location": "/k.pem", "ssl.key.password": "s3cret-kpw", "client.id": "x",
    }
    assert "s3cret" not in repr(s) + str(s)


def test_consumer_conf() -> None:
    s = Settings(group_id="g", session_timeout_ms=1200, sasl_username="svc")
    conf = s.consumer_conf()
    assert conf == {
        "bootstrap.servers": "127.0.0.1:9092", "security.protocol": "PLAINTEXT", "sasl.username": "svc",
        "group.id": "g", "session.timeout.ms": 1200, "heartbeat.interval.ms": 500,
        "enable.auto.commit": False, "auto.offset.reset": "earliest", "enable.partition.eof": False,
        "fetch.wait.max.ms": FETCH_WAIT_MAX_MS, "partition.assignment.strategy": "cooperative-sticky",
        "isolation.level": "read_committed",
    }
    assert Settings(session_timeout_ms=6000).consumer_conf()["heartbeat.interval.ms"] == 1000
    other = s.consumer_conf("reader", **{"auto.offset.reset": "latest"})
    assert (other["group.id"], other["auto.offset.reset"]) == ("reader", "latest")


def test_producer_conf() -> None:
    conf = Settings(security_protocol="SSL").producer_conf(**{"acks": 1})
    assert conf == {
        "bootstrap.servers": "127.0.0.1:9092", "security.protocol": "SSL", "linger.ms": 2,
        "compression.type": "lz4", "acks": 1,
    }


TRAIN = {"epochs": 1, "lr": 0.01, "event_weights": {"purchase": 3.0}}


def _train_config(raw: dict, tmp_path: Path):  # type: ignore[no-untyped-def]
    from streams.cli.data import configs

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"train": raw, "online": {"lr": 0.001}}))
    train_cfg, online_cfg = configs(path)
    assert online_cfg.lr == 0.001
    return train_cfg


def test_train_config_file_nested(tmp_path: Path) -> None:
    cfg = _train_config({**TRAIN, "interest": {"dim": 16, "trending_horizons": [10, 1000]}}, tmp_path)
    assert (cfg.epochs, cfg.lr, cfg.event_weights) == (1, 0.01, {"purchase": 3.0})
    model = cfg.interest
    assert (model.dim, model.trending_horizons, model.profile_items) == (16, (10, 1000), 48)


def test_train_config_file_flat(tmp_path: Path) -> None:
    from engine.offline.train import TrainConfig

    cfg = _train_config({**TRAIN, "dim": 16, "trending_horizons": [10, 1000]}, tmp_path)
    nested = _train_config({**TRAIN, "interest": {"dim": 16, "trending_horizons": [10, 1000]}}, tmp_path)
    assert cfg == nested
    with pytest.raises(ValueError, match="dim"):
        TrainConfig.of(dim=8, interest={"dim": 16})
    with pytest.raises(TypeError, match="dimension"):
        TrainConfig.of(dimension=8)
