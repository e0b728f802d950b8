import json

import pytest

from streams.bench import median_window_rate
from streams.cli import main


def test_median_window_rate_interpolates_between_batches():
    # 1,000 events/s for 4 s, then a stall of 1 s, in batches every 0.5 s
    timeline = [(0.5 * k, 500 * k) for k in range(9)] + [(5.0, 4000)]
    rate, windows = median_window_rate(timeline, n_windows=5)
    assert windows == [1000.0, 1000.0, 1000.0, 1000.0, 0.0] and rate == 1000.0


@pytest.mark.integration
@pytest.mark.bench
@pytest.mark.timeout(300)
def test_bench_runs_every_mode_and_writes_its_report(tmp_path, capsys):
    report = tmp_path / "bench.json"
    args = ["bench", "--users", "200", "--items", "50", "--events", "3000", "--rate", "300", "--latency-seconds", "1",
            "--workdir", str(tmp_path / "work"), "--report", str(report)]
    assert main(args) == 0
    rep = json.loads(report.read_text())
    for mode in ("engine", "raw_pipe", "noop"):
        r = rep[mode]
        assert r["events_per_s"] > 0 and r["peak_rss_bytes"] > 0 and r["latency_samples"] > 0
        assert 0 < r["p50_s"] <= r["p99_s"] <= r["p999_s"] < 30
    assert 0 < rep["engine"]["state_bytes_per_user"] < 4096
    assert rep["ratio_to_raw_pipe"] > 0 and rep["ratio_to_noop"] > 0 and rep["machine"]["cpus"] >= 1
    assert "engine / raw_pipe" in capsys.readouterr().out
