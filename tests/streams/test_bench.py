"""``tide bench``: its throughput windows (events and recommendations), the table, the paced
producer and the reader it measures latency with (against the embedded broker), and (``-m bench``) a
small run of every mode end to end."""

import json
import time
import uuid

import numpy as np
import pytest

from schemas import Recommendation, ScoredItem, SourceRef
from streams.admin import create_topics
from streams.bench import median_window_rate
from streams.cli import main
from streams.config import Settings, Topics
from streams.reader import RecommendationReader
from streams.replay import produce_paced
from streams.topics import topic_specs


def test_median_window_rate_interpolates_between_batches():
    # 1,000 events/s for 4 s, then a stall of 1 s, in batches every 0.5 s
    timeline = [(0.5 * k, 500 * k) for k in range(9)] + [(5.0, 4000)]
    rate, windows = median_window_rate(timeline, n_windows=5)
    assert windows == [1000.0, 1000.0, 1000.0, 1000.0, 0.0] and rate == 1000.0


def test_counting_hooks_put_each_batchs_recommendations_beside_its_events():
    from multiprocessing import Value

    from streams.bench.modes import _Counting

    timeline: list[tuple[float, int, int]] = [(0.0, 0, 0)]
    hooks = _Counting(Value("q", 0), timeline, events=5_000)
    for n_events, n_recs in ((2_000, 300), (2_000, 250), (1_000, 100)):
        hooks.on_batch(n_events, 0.1)
        hooks.on_recommendations(n_recs, [0.01] * n_recs)
    assert [(c, r) for _, c, r in timeline] == [(0, 0), (2_000, 300), (4_000, 550), (5_000, 650)]


def test_recommendations_per_s_is_the_median_of_the_same_windows_and_is_printed(capsys):
    from streams.bench.measure import _result
    from streams.bench.report import print_table

    # 1,000 events/s and 100 recommendations/s, in batches every 0.5 s for 5 s
    timeline = [(0.5 * k, 500 * k, 50 * k) for k in range(11)]
    out = {"timeline": timeline, "peak_rss_bytes": 2**20}
    r = _result(out, np.array([0.01, 0.02]), {"start": 0.0, "end": 1.0}, 5_000, 10_000.0)
    assert r.events_per_s == 1_000.0 and r.recommendations_per_s == 100.0
    pub = r.public()
    assert pub["recommendations"] == 500 and pub["windows_recommendations_per_s"] == [100.0] * 5
    machine = {"cpus": 2, "cpu_affinity": 2, "torch": "x"}
    print_table({"engine": pub, "machine": machine})
    head, row = capsys.readouterr().out.strip().splitlines()[:2]
    assert "recs/s" in head and row.split()[:3] == ["engine", "1,000", "100"]


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_topk_cost_times_the_exact_and_the_candidate_paths():
    from streams.bench import topk_cost

    t = topk_cost(3_000, users=32, dim=16, repeats=1, device="cpu")
    assert t["items"] == 3_000 and t["median_s"] > 0 and t["index_median_s"] > 0
    assert 0.5 <= t["index_recall"] <= 1.0 and t["index_bytes"] > 3_000 * 16 * 4


def test_paced_records_reach_the_reader_with_their_latency(embedded_broker):
    tag = f"pace-{uuid.uuid4().hex[:6]}"
    topics = Topics(**{name: f"{tag}.{name}" for name in Topics.model_fields})
    settings = Settings(bootstrap_servers=embedded_broker.bootstrap_servers, topics=topics)
    create_topics(settings.bootstrap_servers, topic_specs(settings))
    latencies = RecommendationReader(settings, keep_records=False)
    records = RecommendationReader(settings)
    for reader in (latencies, records):
        reader.start()
        assert reader.ready.wait(60)
    latencies.live_from = time.time() - 1  # the events below are stamped 50 ms in the past

    def record(k: int) -> tuple[bytes, bytes]:  # each answers an event stamped 50 ms before it is sent
        source = SourceRef(topics.interactions, 0, k, time.time() - 0.05, k)
        rec = Recommendation(f"u{k}", (ScoredItem("i0", 1.0, "test"),), "v", source, time.time())
        return rec.to_json(), rec.user_id.encode()

    n, rate = 40, 200.0
    try:
        res = produce_paced(settings.producer_conf(), topics.recommendations, n, record, rate=rate)
        assert res.n == n and res.seconds >= (n - 1) / rate
        assert sorted(res.offsets.tolist()) == list(range(n)) and (res.timestamps > 0).all()
        assert records.wait_for({(0, k) for k in range(n)}, 30)
        deadline = time.monotonic() + 30
        while len(latencies.latencies) < n and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        latencies.stop()
        records.stop()
    assert len(latencies.latencies) == n and all(0.04 < x < 5 for x in latencies.latencies)
    assert [r.user_id for r, _ in records.records] == [f"u{k}" for k in range(n)]
    assert not records.latencies  # live_from unset: no latency kept


@pytest.mark.integration
@pytest.mark.bench
@pytest.mark.timeout(300)
def test_bench_runs_every_mode_and_writes_its_report(tmp_path, capsys):
    report = tmp_path / "bench.json"
    args = ["bench", "--users", "200", "--items", "50", "--events", "3000", "--rate", "300",
            "--latency-seconds", "1", "--workdir", str(tmp_path / "work"), "--report", str(report)]
    assert main(args) == 0
    rep = json.loads(report.read_text())
    for mode in ("engine", "raw_pipe", "noop"):
        r = rep[mode]
        assert r["events_per_s"] > 0 and r["peak_rss_bytes"] > 0 and r["latency_samples"] > 0
        assert 0 < r["p50_s"] <= r["p99_s"] <= r["p999_s"] < 30
        reps = 1 if mode == "engine" else 4
        assert 0 < r["recommendations_per_s"] and 0 < r["recommendations"] <= 3000 * reps
    assert 0 < rep["engine"]["state_bytes_per_user"] < 4096
    assert rep["ratio_to_raw_pipe"] > 0 and rep["ratio_to_noop"] > 0 and rep["machine"]["cpus"] >= 1
    assert "engine / raw_pipe" in capsys.readouterr().out
