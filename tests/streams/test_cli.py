"""The command line: settings and option defaults reach the parsers, flags override settings, and
train → evaluate runs end to end on a tiny log."""

import json
from dataclasses import asdict

import pytest

from engine.offline.baselines import default_baselines
from streams.bench import BenchOptions
from streams.cli import build_parser, main
from streams.cli.flags import with_flags
from streams.config import Settings


def _csv(path, n_users=6, n_events=300):
    rows = ["user,item,timestamp"]
    for k in range(n_events):
        u = k % n_users
        rows.append(f"u{u},i{(u * 3 + (k // n_users) % 4) % 15},{k * 10}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_train_then_evaluate_writes_a_report(tmp_path, monkeypatch, capsys):
    data = _csv(tmp_path / "log.csv")
    monkeypatch.setenv("TIDE_CHECKPOINT_DIR", str(tmp_path / "ck"))
    assert main(["train", "--data", str(data), "--epochs", "1", "--out", str(tmp_path / "ck")]) == 0
    assert list((tmp_path / "ck").glob("tide-*.pt"))
    report = tmp_path / "report.json"
    ck = next((tmp_path / "ck").glob("tide-*.pt"))
    for protocol in ("jodie", "tgb"):
        argv = ["evaluate", "--data", str(data), "--protocol", protocol, "--checkpoint", str(ck)]
        assert main([*argv, "--report", str(report)]) == 0
        rep = json.loads(report.read_text())
        assert set(rep["baselines"]) == set(default_baselines())
        assert rep["strongest_baseline"] in rep["baselines"]
        assert rep["protocol"] == protocol
        assert rep["model"]["n"] == rep["baselines"]["recency_frequency"]["n"] > 0
        assert 0 < rep["model"]["mrr"] <= 1 and {"repeat", "first_time", "ndcg@10"} <= set(rep["model"])
        assert report.with_suffix(".png").stat().st_size > 1000
    # without a checkpoint it trains on the protocol's training split first
    argv = ["evaluate", "--data", str(data), "--epochs", "1", "--no-online"]
    assert main([*argv, "--report", str(report)]) == 0
    rep = json.loads(report.read_text())
    assert "train_s" in rep["timings"] and rep["config"]["train"]["epochs"] == 1
    assert rep["config"]["online"]["enabled"] is False


def test_bench_flags_default_to_bench_options():
    args = build_parser(Settings()).parse_args(["bench"])
    opts = asdict(BenchOptions())
    flags = {"batch": "batch_max_events", "modes": "modes", "no_online": "online_learning"}
    for name in ("data", "users", "active_users", "items", "popularity", "zipf", "user_pattern", "new_items",
                 "events", "rate", "latency_seconds", "bootstrap", "checkpoint", "dim", "top_k", "device",
                 "workdir"):
        assert getattr(args, name) == opts[name], name
    assert args.batch == opts[flags["batch"]] and args.modes.split(",") == list(opts["modes"])
    assert args.no_online is not opts["online_learning"]


def test_bench_workload_flags_parse_and_refuse_bad_values():
    parser = build_parser(Settings())
    argv = ["bench", "--items", "1000000", "--active-users", "1000000", "--popularity", "zipf",
            "--zipf", "1.3", "--user-pattern", "bursty", "--new-items", "0.05"]
    args = parser.parse_args(argv)
    assert (args.items, args.active_users, args.popularity, args.zipf) == (1_000_000, 1_000_000, "zipf", 1.3)
    assert (args.user_pattern, args.new_items) == ("bursty", 0.05)
    for bad in (["--new-items", "1.5"], ["--zipf", "0"], ["--popularity", "pareto"], ["--user-pattern", "x"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["bench", *bad])


def test_settings_defaults_reach_the_parsers_and_flags_override_only_what_is_given(monkeypatch):
    monkeypatch.setenv("TIDE_PARTITIONS", "3")
    settings = Settings()
    assert build_parser(settings).parse_args(["broker"]).partitions == 3
    assert with_flags(settings, bootstrap_servers=None) is settings
    moved = with_flags(settings, bootstrap_servers="kafka-9:9092", web_port=None)
    assert moved.bootstrap_servers == "kafka-9:9092" and moved.web_port == settings.web_port
    assert moved.partitions == 3 and settings.bootstrap_servers != "kafka-9:9092"
