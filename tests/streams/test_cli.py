import json

from streams.cli import main


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
        assert main(["evaluate", "--data", str(data), "--protocol", protocol, "--checkpoint", str(ck), "--report", str(report)]) == 0
        rep = json.loads(report.read_text())
        assert set(rep["baselines"]) == {"recency_frequency", "last_item_transitions", "popularity"}
        assert rep["protocol"] == protocol and rep["model"]["n"] == rep["baselines"]["recency_frequency"]["n"] > 0
        assert 0 < rep["model"]["mrr"] <= 1 and {"repeat", "first_time", "ndcg@10"} <= set(rep["model"])
        assert report.with_suffix(".png").stat().st_size > 1000
    # without a checkpoint it trains on the protocol's training split first
    assert main(["evaluate", "--data", str(data), "--epochs", "1", "--no-online", "--report", str(report)]) == 0
    assert json.loads(report.read_text())["timings"]["train_s"] > 0
