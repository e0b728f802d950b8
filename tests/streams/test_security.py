"""Security settings reach every Kafka client TIDE makes, and secrets reach no log and no view.

Tested by configuration inspection: each client class is replaced by a recorder of the
configuration it is built with (no connection is made), then each path that builds a client runs.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from streams.config import Settings

SECRET = "s3cret-never-logged"
KEY_SECRET = "key-pass-never-logged"
SECURITY = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "tide-svc",
    "sasl.password": SECRET,
    "ssl.ca.location": "/etc/tide/ca.pem",
    "ssl.certificate.location": "/etc/tide/client.pem",
    "ssl.key.location": "/etc/tide/client.key",
    "ssl.key.password": KEY_SECRET,
}


class _Built(Exception):
    pass


@pytest.fixture
def secure(tmp_path, monkeypatch):
    from engine.checkpoint import save_checkpoint
    from models.interest import InterestConfig, InterestModel

    save_checkpoint(
        tmp_path / "ck", InterestModel(InterestConfig(n_items=4, dim=8)), ["a", "b", "c", "d"], {}
    )
    for k, v in SECURITY.items():
        monkeypatch.setenv("TIDE_" + k.upper().replace(".", "_"), v)
    return Settings(
        bootstrap_servers="kafka-1:9093", checkpoint_dir=tmp_path / "ck", state_dir=tmp_path / "state"
    )


def _recorder(seen: list, name: str, fail: bool = False):  # type: ignore[no-untyped-def]
    class Client:
        def __init__(self, conf, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            seen.append((name, dict(conf)))
            if fail:
                raise _Built(name)

    return Client


def test_security_settings_reach_every_kafka_client(secure, monkeypatch, caplog, tmp_path):
    import streams.catalog_stage
    import streams.forget
    import streams.reader
    import streams.replay
    import streams.topic_log
    import streams.worker
    from engine.offline.data import InteractionLog
    from streams.catalog_stage import CatalogStage, produce_catalog
    from streams.forget import request_deletion
    from streams.reader import RecommendationReader
    from streams.replay import replay
    from streams.runtime import load_engine
    from streams.topic_log import read_topic
    from streams.worker import Worker

    caplog.set_level(logging.DEBUG)
    seen: list = []
    for mod, cls in [(streams.worker, "Consumer"), (streams.worker, "Producer"),
                     (streams.worker, "AdminClient"), (streams.reader, "Consumer")]:
        monkeypatch.setattr(mod, cls, _recorder(seen, f"{mod.__name__}.{cls}"))
    for mod, cls in [(streams.catalog_stage, "Consumer"), (streams.catalog_stage, "Producer"),
                     (streams.replay, "Producer"), (streams.topic_log, "Consumer"),
                     (streams.forget, "Producer")]:
        monkeypatch.setattr(mod, cls, _recorder(seen, f"{mod.__name__}.{cls}", fail=True))

    engine = load_engine(secure)
    worker = Worker(secure, engine)  # the hot path's consumer, producer and admin client
    RecommendationReader(secure)
    catalog = CatalogStage(secure, engine, lambda *a: None)
    with pytest.raises(_Built):
        catalog._run()  # the catalog stage's consumer, built in its thread
    for call in (
        lambda: produce_catalog(secure, []),
        lambda: replay(secure.producer_conf(), "t", InteractionLog(*(np.zeros(0),) * 4), progress=False),
        lambda: read_topic(secure, "t"),
        lambda: request_deletion(secure, ["u"]),
    ):
        with pytest.raises(_Built):
            call()
    admin_conf = secure.librdkafka()  # `tide topics` hands this to the AdminClient of create_topics
    seen.append(("streams.cli.topics", admin_conf))
    assert {name for name, _ in seen} >= {
        "streams.worker.Consumer", "streams.worker.Producer", "streams.worker.AdminClient",
        "streams.reader.Consumer", "streams.catalog_stage.Consumer", "streams.catalog_stage.Producer",
        "streams.replay.Producer", "streams.topic_log.Consumer", "streams.forget.Producer",
        "streams.cli.topics",
    }
    for name, conf in seen:
        assert {k: conf.get(k) for k in SECURITY} == SECURITY, name
        assert conf["bootstrap.servers"] == "kafka-1:9093", name

    # Faust's own clients (the web and control app) get the same credentials
    from streams.app import faust_credentials

    creds = faust_credentials(
        secure.model_copy(
            update={"ssl_ca_location": None, "ssl_certificate_location": None, "ssl_key_location": None}
        )
    )
    assert (
        creds.username == "tide-svc"
        and creds.password == SECRET
        and creds.mechanism.value == "SCRAM-SHA-512"
    )

    # … and the secrets show nowhere: not in the settings' text, the logs, or /health
    health = json.dumps(worker.health())
    for text in (repr(secure), str(secure), health, caplog.text):
        assert SECRET not in text and KEY_SECRET not in text
    engine.close()


def test_web_views_bind_to_loopback_unless_told_otherwise(secure):
    from prometheus_client import CollectorRegistry

    from streams.app import build_app
    from streams.runtime import load_engine

    engine = load_engine(secure)
    try:
        plain = secure.model_copy(update={"security_protocol": "PLAINTEXT"})
        app, _ = build_app(plain, engine, CollectorRegistry())
        assert app.conf.web_bind == "127.0.0.1" and app.conf.web_host == "127.0.0.1"
        app, _ = build_app(plain.model_copy(update={"web_host": "0.0.0.0"}), engine, CollectorRegistry())
        assert app.conf.web_bind == "0.0.0.0"
    finally:
        engine.close()
