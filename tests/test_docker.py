"""docker/: the Compose file, Prometheus's configuration and the Dockerfile, read as files (no Docker
engine) and checked against each other and against the code: services and volumes named exist, the
TIDE_* variables are settings with valid values, commands are the CLI's, workers listen where Prometheus
scrapes them, Grafana's data source is the Prometheus service, no host port is published twice, the
fleet shares one checkpoint volume and nothing else, the image holds what pyproject.toml packages, and
docker/README.md names only settings and lists every topic.
tests/streams/test_dashboard.py checks Grafana's dashboards and their provider."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.cli import build_parser
from streams.config import Settings, markdown
from streams.topics import topic_specs

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
PROMETHEUS = DOCKER / "prometheus.yml"
README = DOCKER / "README.md"
DOCKERFILE = DOCKER / "Dockerfile"
TIDE_VARIABLES = {line.split("`")[1] for line in markdown().splitlines() if line.startswith("| `TIDE_")}
#: what the image's processes read besides TIDE_* (Python's own)
OTHER_VARIABLES = {"PYTHONUNBUFFERED"}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments), continuation lines joined, comments left out."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, rest = (pending + line).strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def _instructions(name: str) -> list[str]:
    return [args for word, args in _dockerfile() if word == name]


def _image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in _instructions("ENV"):
        for part in shlex.split(args):
            name, _, value = part.partition("=")
            env[name] = value
    return env


COMPOSE_DOC = _yaml(COMPOSE)
SERVICES: dict[str, dict[str, Any]] = COMPOSE_DOC["services"]
#: the services built from this repository's image
TIDE = sorted(name for name, s in SERVICES.items() if "build" in s)


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume entry, short or long syntax."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out.append((v["source"], v["target"]))
        else:
            source, target = v.split(":")[:2]
            out.append((source, target))
    return out


def _ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(host, container) of each published port."""
    out = []
    for entry in service.get("ports", []):
        host, container = str(entry).split(":")[-2:]
        out.append((int(host), int(container)))
    return out


def _depends_on(service: dict[str, Any]) -> list[str]:
    return list(service.get("depends_on") or [])


def _command(name: str) -> list[str]:
    command = SERVICES[name].get("command")
    if command is None:
        command = json.loads(_instructions("CMD")[-1])
    return shlex.split(command) if isinstance(command, str) else list(command)


def _cli_args(command: list[str]) -> list[str]:
    """The arguments of ``tide …`` or ``python -m streams.cli …``."""
    if command[0] == "tide":
        return command[1:]
    assert command[:3] == ["python", "-m", "streams.cli"], f"not a TIDE command: {command}"
    return command[3:]


def _role(name: str) -> str:
    args = build_parser(Settings()).parse_args(_cli_args(_command(name)))
    return str(args.role if args.cmd == "start" else args.cmd)


@pytest.fixture
def settings_of(monkeypatch: pytest.MonkeyPatch):
    """A service's Settings as its process reads them: the image's ENV, then the service's environment."""

    def read(name: str) -> Settings:
        for var in list(os.environ):
            if var.startswith("TIDE_"):
                monkeypatch.delenv(var)
        for var, value in {**_image_env(), **_env(SERVICES[name])}.items():
            monkeypatch.setenv(var, value)
        return Settings()

    return read


def test_the_files_parse_and_prometheus_accepts_its_configuration() -> None:
    assert set(COMPOSE_DOC) - {"services", "volumes"} <= {k for k in COMPOSE_DOC if k.startswith("x-")}
    assert {"kafka", "prometheus", "grafana"} <= set(SERVICES) and TIDE
    assert _yaml(PROMETHEUS)["scrape_configs"]
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed")
    done = subprocess.run(["promtool", "check", "config", str(PROMETHEUS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_service_named_exists() -> None:
    named = {(name, dep) for name, s in SERVICES.items() for dep in _depends_on(s)}
    for job in _yaml(PROMETHEUS)["scrape_configs"]:
        for static in job["static_configs"]:
            named |= {(f"prometheus job {job['job_name']}", t.split(":")[0]) for t in static["targets"]}
    for name in TIDE:
        named |= {(name, b.split(":")[0]) for b in _env(SERVICES[name])["TIDE_BOOTSTRAP_SERVERS"].split(",")}
    missing = sorted(f"{who} → {what}" for who, what in named if what not in SERVICES)
    assert not missing, f"services named but not defined: {missing}"
    for name, s in SERVICES.items():
        conditions = s["depends_on"].items() if isinstance(s.get("depends_on"), dict) else []
        for dep, cond in conditions:
            if cond.get("condition") == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{name} waits for {dep} to be healthy: no check"


def test_volumes_are_declared_used_and_bind_mounts_exist() -> None:
    declared = set(COMPOSE_DOC.get("volumes") or {})
    used = set()
    for name, s in SERVICES.items():
        for source, _ in _mounts(s):
            if source.startswith((".", "/")):
                assert (COMPOSE.parent / source).exists(), f"{name} mounts {source}, which is not in the repo"
            else:
                assert source in declared, f"{name} mounts volume {source!r}, not declared under volumes:"
                used.add(source)
    assert declared == used, f"volumes declared and never mounted: {sorted(declared - used)}"


def test_the_tide_variables_are_settings_with_valid_values(settings_of) -> None:
    for where, env in [("Dockerfile", _image_env())] + [(n, _env(SERVICES[n])) for n in TIDE]:
        unknown = sorted(set(env) - TIDE_VARIABLES - OTHER_VARIABLES)
        assert not unknown, f"{where}: not a setting (docs/configuration.md): {unknown}"
    for name in TIDE:
        settings_of(name)  # a bad value, or a combination the settings refuse, fails here


def test_commands_are_the_cli_commands() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["tide"] == "streams.cli:main"
    parser = build_parser(Settings())
    for name in TIDE:
        parser.parse_args(_cli_args(_command(name)))  # an unknown command or flag exits here
    image = json.loads(_instructions("CMD")[-1])
    assert parser.parse_args(_cli_args(image)).cmd == "start", "the image's command is not `tide start`"


def test_workers_listen_where_prometheus_scrapes_them(settings_of) -> None:
    exposed = {int(p.split("/")[0]) for args in _instructions("EXPOSE") for p in args.split()}
    workers = [n for n in TIDE if _role(n) == "worker"]
    assert workers
    expected, host_ports = set(), []
    for name in workers:
        s = settings_of(name)
        assert s.web_host == "0.0.0.0", f"{name} listens on {s.web_host}: Prometheus cannot reach it"
        assert s.web_url == f"http://{name}:{s.web_port}", f"{name}: other workers reach it at {s.web_url}"
        published = _ports(SERVICES[name])
        assert s.web_port in {c for _, c in published}, f"{name} on {s.web_port}; publishes {published}"
        assert s.web_port in exposed, f"the image exposes {exposed}, {name} listens on {s.web_port}"
        host_ports += [h for h, _ in published]
        expected.add(f"{name}:{s.web_port}")
    assert len(host_ports) == len(set(host_ports)), f"a host port published twice: {host_ports}"
    jobs = _yaml(PROMETHEUS)["scrape_configs"]
    scraped = {t for job in jobs for c in job["static_configs"] for t in c["targets"]}
    assert scraped == expected, f"Prometheus scrapes {sorted(scraped)}; workers listen on {sorted(expected)}"
    assert Settings.model_fields["web_port"].default in exposed


def test_the_fleet_shares_its_checkpoints_and_settings_but_not_state(settings_of) -> None:
    checkpoint_volumes, state_volumes, ids = set(), [], []
    shared = set()
    for name in TIDE:
        s = settings_of(name)
        mounts = {target: source for source, target in _mounts(SERVICES[name])}
        assert str(s.checkpoint_dir) in mounts, f"{name}: {s.checkpoint_dir} is not on a volume"
        checkpoint_volumes.add(mounts[str(s.checkpoint_dir)])
        if _role(name) == "worker":
            assert str(s.state_dir) in mounts, f"{name}: its state {s.state_dir} is not on a volume"
            state_volumes.append(mounts[str(s.state_dir)])
        ids.append(s.worker_id)
        shared.add((s.bootstrap_servers, s.group_id, s.partitions, s.item_stage, s.learner, s.topics))
    assert len(checkpoint_volumes) == 1, f"the fleet must serve one model; checkpoints: {checkpoint_volumes}"
    assert not set(state_volumes) & checkpoint_volumes
    assert len(state_volumes) == len(set(state_volumes)), f"workers share a state volume: {state_volumes}"
    assert None not in ids and len(ids) == len(set(ids)), f"worker ids (transactional ids) repeat: {ids}"
    assert len(shared) == 1, f"the TIDE services disagree on cluster, group, partitions or stages: {shared}"


def test_host_ports_are_published_once_and_grafana_reaches_prometheus() -> None:
    published = [host for s in SERVICES.values() for host, _ in _ports(s)]
    assert len(published) == len(set(published)), f"a host port published twice: {sorted(published)}"
    sources = [
        source
        for f in sorted((DOCKER / "grafana-provisioning" / "datasources").glob("*.yml"))
        for source in _yaml(f)["datasources"]
    ]
    assert sources, "no Grafana data source provisioned"
    for source in sources:
        host, _, port = source["url"].removeprefix("http://").rstrip("/").partition(":")
        assert host in SERVICES, f"data source {source['name']}: {host} is not a service"
        # inside the Compose network a service is reached on its container port
        served = {c for _, c in _ports(SERVICES[host])}
        assert int(port) in served, f"{source['url']}: {host} serves {sorted(served)}"
    assert "prometheus" in _depends_on(SERVICES["grafana"])


def test_the_bootstrap_servers_are_kafkas_advertised_listener() -> None:
    listeners = _env(SERVICES["kafka"])["KAFKA_ADVERTISED_LISTENERS"].split(",")
    advertised = {listener.split("://")[1] for listener in listeners}
    for name in TIDE:
        servers = set(_env(SERVICES[name])["TIDE_BOOTSTRAP_SERVERS"].split(","))
        assert servers <= advertised, f"{name} bootstraps from {servers}; Kafka advertises {advertised}"
        assert "kafka" in _depends_on(SERVICES[name]), f"{name} does not wait for Kafka"


def test_the_image_holds_what_pyproject_packages() -> None:
    for name in TIDE:
        build = SERVICES[name]["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == ROOT and (context / build["dockerfile"]).resolve() == DOCKERFILE.resolve(), name
    copied = set()
    for args in _instructions("COPY"):
        parts = [p for p in args.split() if not p.startswith("--")]
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: not in the build context"
            copied.add(source)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"pyproject.toml", project["project"]["readme"]} <= copied, (
        f"pyproject.toml packages {sorted(packages)}; the image copies {sorted(copied)}"
    )


def test_the_readme_names_settings_and_every_topic() -> None:
    text = README.read_text()
    named = set(re.findall(r"TIDE_[A-Z_]*[A-Z]", text)) - {"TIDE_TOPIC"}  # TIDE_TOPIC_<NAME> stands for all
    unknown = sorted(named - TIDE_VARIABLES)
    assert not unknown, f"docker/README.md names variables that are no settings: {unknown}"
    assert {"TIDE_SECURITY_PROTOCOL", "TIDE_SASL_PASSWORD", "TIDE_SSL_CA_LOCATION"} <= named
    missing = sorted(s.name for s in topic_specs(Settings()) if f"`{s.name}`" not in text)
    assert not missing, f"docker/README.md does not list the topics {missing}"
