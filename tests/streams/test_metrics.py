"""Prometheus metrics: series at zero, and the hooks feeding them (the dashboard: test_dashboard.py)."""

import math

from prometheus_client import CollectorRegistry, generate_latest

from engine.quality import QualitySnapshot
from streams.metrics import DLQ_REASONS, METRIC_NAMES, Metrics


def test_series_exist_at_zero_and_hooks_feed_them():
    reg = CollectorRegistry()
    m = Metrics(reg, topics=["tide.interactions"], partitions=[0, 1])
    text = generate_latest(reg).decode()
    assert 'tide_events_consumed_total{topic="tide.interactions"} 0.0' in text
    assert 'tide_consumer_lag_messages{partition="1",topic="tide.interactions"} 0.0' in text
    for r in DLQ_REASONS:
        assert f'tide_dead_letters_total{{reason="{r}"}} 0.0' in text
    m.on_consumed("tide.interactions", 5)
    m.on_batch(4, 0.002)
    m.on_recommendations(3, [0.01, 0.02, 0.03])
    m.on_dead_letter("not_json")
    m.on_dead_letter("something new")
    m.on_skipped(2)
    m.on_state_bytes("users", 1234)
    m.on_state_memory("block_cache", 4096)
    m.set_model("v1")
    m.on_learning(1, 3.5, 120)
    m.on_learning(0, None, 140)
    v = reg.get_sample_value
    assert v("tide_events_consumed_total", {"topic": "tide.interactions"}) == 5
    assert v("tide_events_folded_total") == 4
    assert v("tide_recommendations_emitted_total") == 3
    assert v("tide_event_to_recommendation_seconds_count") == 3
    assert v("tide_dead_letters_total", {"reason": "other"}) == 1
    assert v("tide_state_bytes", {"store": "users"}) == 1234
    assert v("tide_state_memory_bytes", {"kind": "block_cache"}) == 4096
    assert v("tide_model_info", {"version": "v1"}) == 1
    online = (v("tide_online_steps_total"), v("tide_online_loss"), v("tide_online_examples_waiting"))
    assert online == (1, 3.5, 140)


def test_every_exported_name_is_registered():
    reg = CollectorRegistry()
    Metrics(reg)
    names = {fam.name + ("_total" if fam.type == "counter" else "") for fam in reg.collect()}
    assert names == set(METRIC_NAMES)


def test_fault_and_removal_series():
    reg = CollectorRegistry()
    m = Metrics(reg, topics=["tide.interactions"], partitions=[0])
    v = reg.get_sample_value
    assert v("tide_broker_up") == 1 and v("tide_kafka_errors_total", {"kind": "timed_out"}) == 0
    assert v("tide_users_removed_total", {"reason": "expired"}) == 0
    m.on_lag("tide.interactions", 0, 7)
    m.on_kafka_error("timed_out")
    m.on_kafka_error("something else")
    m.on_broker(False)
    assert v("tide_broker_up") == 0 and v("tide_kafka_errors_total", {"kind": "other"}) == 1
    lag = v("tide_consumer_lag_messages", {"topic": "tide.interactions", "partition": "0"})
    assert lag != lag  # NaN: unknown while the broker does not answer
    m.on_broker(True)
    m.on_users_removed("expired", 3)
    m.on_users_removed("deleted", 1)
    m.on_online_error()
    assert v("tide_broker_up") == 1 and v("tide_users_removed_total", {"reason": "expired"}) == 3
    assert v("tide_users_removed_total", {"reason": "deleted"}) == 1 and v("tide_online_errors_total") == 1


def test_live_quality_and_drift_series():
    reg = CollectorRegistry()
    m = Metrics(reg)
    v = reg.get_sample_value
    assert v("tide_interest_drifts_total") == 0 and v("tide_live_judged_events") == 0
    nan = float("nan")
    m.on_quality(QualitySnapshot(0, nan, nan, 0, nan, nan, nan))  # nothing judged yet: NaN, not 0
    assert math.isnan(v("tide_live_recall_ratio")) and math.isnan(v("tide_live_exposure_gini_ratio"))
    m.on_quality(QualitySnapshot(120, 0.25, 0.125, 40, 0.5, 0.75, 0.3))
    m.on_drifts(2)
    m.on_drifts(1)
    assert v("tide_live_judged_events") == 120
    assert v("tide_live_recall_ratio") == 0.25 and v("tide_live_mrr_ratio") == 0.125
    assert v("tide_live_coverage_ratio") == 0.5 and v("tide_live_intra_list_distance") == 0.75
    assert v("tide_live_exposure_gini_ratio") == 0.3 and v("tide_interest_drifts_total") == 3
