"""What `tide soak` reports: the RSS slope and its verdict, metrics parsing, the plot and the summary."""

import math

import numpy as np
import pytest

from streams.soak import _less_rocksdb, _users_expired
from streams.soak_report import parse_metrics, plot_soak, print_soak, rss_slope

MIB = 2**20


def test_rss_slope_of_a_flat_noisy_series_is_flat_with_an_interval_around_zero():
    rng = np.random.default_rng(0)
    t = np.arange(0, 1800, 10.0)  # 30 min every 10 s
    rss = (500 + rng.normal(0, 2, len(t))) * MIB
    s = rss_slope(t, rss)
    assert s["flat"] is True
    assert abs(s["slope_mib_per_min"]) <= s["ci95_mib_per_min"]
    assert s["window_s"] == pytest.approx(1190.0)  # the last 2/3 of 180 samples: 120, 10 s apart
    assert s["mean_mib"] == pytest.approx(500, abs=1)


def test_rss_slope_of_a_ramp_is_not_flat_and_recovers_the_slope():
    rng = np.random.default_rng(1)
    t = np.arange(0, 1800, 10.0)
    rss = (400 + 2.0 * t / 60 + rng.normal(0, 2, len(t))) * MIB  # 2 MiB per minute
    s = rss_slope(t, rss)
    assert s["flat"] is False
    assert s["slope_mib_per_min"] == pytest.approx(2.0, abs=0.05)
    assert 0 < s["ci95_mib_per_min"] < 0.1


def test_rss_slope_exact_line_and_too_few_points():
    t = np.arange(0, 600, 60.0)
    s = rss_slope(t, (100 + 3.0 * t / 60) * MIB, last_fraction=1.0)
    assert s["slope_mib_per_min"] == pytest.approx(3.0)
    assert s["ci95_mib_per_min"] == pytest.approx(0, abs=1e-9)
    assert s["window_s"] == 540.0 and s["mean_mib"] == pytest.approx(113.5) and s["flat"] is False
    few = rss_slope([0.0, 10.0], [MIB, 2 * MIB])
    assert math.isinf(few["ci95_mib_per_min"]) and few["flat"] is False


def test_parse_metrics_keeps_labels_and_skips_comments():
    text = "\n".join([
        "# HELP tide_state_bytes Approximate bytes in a state store.",
        "# TYPE tide_state_bytes gauge",
        'tide_state_bytes{store="users"} 1.5e+06',
        'tide_state_bytes{store="items"} 20.0',
        "tide_events_folded_total 300.0",
        'tide_consumer_lag_messages{partition="0",topic="soak.interactions"} 4.0',
        'tide_consumer_lag_messages{partition="0",topic="soak.items"} 1.0',
        'odd_name{a="x} y, \\"q\\""} +Inf 1700000000000',
        "",
        "not a sample",
    ])
    m = parse_metrics(text)
    assert m['tide_state_bytes{store="users"}'] == 1_500_000.0
    assert m['tide_state_bytes{store="items"}'] == 20.0
    assert m["tide_events_folded_total"] == 300.0
    assert m['tide_consumer_lag_messages{partition="0",topic="soak.interactions"}'] == 4.0
    assert m['odd_name{a="x} y, \\"q\\""}'] == math.inf
    assert len(m) == 6
    assert _users_expired(m) is None
    assert _users_expired(parse_metrics('tide_users_removed_total{reason="expired"} 7.0')) == 7.0
    assert _users_expired(parse_metrics("tide_users_expired_total 3.0")) == 3.0


def test_plot_soak_writes_a_png(tmp_path):
    samples = [
        {"t_s": 10.0 * k, "rss_bytes": (300 + k) * MIB, "state_files_bytes": k * MIB,
         "state_bytes_users": (k * MIB if k else None), "lag_messages": float(k % 3),
         "p50_s": (0.01 * (k + 1) if k else None), "p99_s": (0.5 * (k + 1) if k else None),
         "worker_cpu_s": 8.0 * k, "broker_cpu_s": None, "rocksdb_memory_bytes": min(k, 4) * MIB}
        for k in range(7)
    ]
    report = {
        "options": {"rate": 500.0, "user_ttl_s": 300.0, "new_users_per_s": 20.0},
        "samples": samples,
        "rss": {"slope": rss_slope([s["t_s"] for s in samples], [s["rss_bytes"] for s in samples])},
    }
    png = tmp_path / "soak.png"
    plot_soak(report, png)
    assert png.stat().st_size > 1_000


def test_print_soak_summarises_and_warns_of_a_busy_embedded_broker(capsys):
    samples = [
        {"t_s": 10.0 * k, "rss_bytes": 300 * MIB, "state_files_bytes": k * MIB,
         "state_bytes_users": 2 * k * MIB, "lag_messages": float(k), "users_expired": None,
         "broker_cpu_s": 0.95 * 10 * k, "rocksdb_memory_bytes": (20 + k) * MIB}
        for k in range(4)
    ]
    less = _less_rocksdb(samples)
    assert less[1] == [(280 - k) * MIB for k in range(4)]
    report = {
        "options": {"rate": 500.0, "minutes": 0.5, "new_users_per_s": 20.0, "user_ttl_s": 300.0,
                    "sample_s": 10.0},
        "samples": samples,
        "rss": {"start_bytes": 300 * MIB, "peak_bytes": 300 * MIB, "final_bytes": 300 * MIB,
                "slope": rss_slope([s["t_s"] for s in samples], [s["rss_bytes"] for s in samples]),
                "slope_less_rocksdb": rss_slope(*less)},
        "latency": {"p50_s": 0.012, "p99_s": 0.25},
        "events_produced": 15_000,
        "users_introduced": 601,
    }
    print_soak(report)
    out = capsys.readouterr().out
    assert "flat yes" in out and "max 3 messages" in out and "p50 12.0 ms   p99 250.0 ms" in out
    assert "  less RocksDB      -6.00 ± 0.00 MiB/min" in out and "(RocksDB 20.0 → 23.0 MiB)" in out
    assert "first 0.0 MiB   last 6.0 MiB" in out and "users expired —" in out
    assert "CPU 95% → 95% of a core" in out and "warning: the embedded broker" in out
