"""What ``tide soak`` reports: the RSS trend and whether it is flat, a printed summary, and a plot;
with the parsing of the worker's Prometheus text that the samples are read from."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MIB", "cpu_pct", "fmt_mib", "fmt_ms", "fmt_num", "parse_metrics", "plot_soak", "print_soak", "rss_slope",
]

MIB = 2**20

# Two-sided 95% quantiles of Student's t for 1…30 degrees of freedom; beyond, a Cornish-Fisher
# expansion around the normal quantile (within 0.001 of the exact value from 30 on).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
    2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)
_Z975 = 1.959964

# The in-memory embedded broker works harder the more record batches a partition holds; past this
# share of a core (per sample interval) it may be what limits the run.
_BROKER_BUSY_PCT = 90.0
_FLAT_DRIFT = 0.01  # "flat": the fitted drift over the window is under this share of the mean RSS
# One sample line of the Prometheus text format: name, optional {labels} (quoted values may hold
# braces, commas and escaped quotes), value, optional timestamp.
_METRIC_LINE = re.compile(
    r'^([A-Za-z_:][A-Za-z0-9_:]*)'  # name
    r'(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?'  # {labels}
    r'\s+(\S+)(?:\s+\S+)?\s*$'  # value [timestamp]
)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition → ``{"name{labels}": value}`` (labels exactly as written, none for
    unlabelled series); comments, blank and malformed lines are skipped."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _METRIC_LINE.match(line)
        if m is None:
            continue
        try:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        except ValueError:
            continue
    return out


def _t975(df: int) -> float:
    if df < 1:
        return math.inf
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def rss_slope(
    times_s: Sequence[float] | np.ndarray,
    rss_bytes: Sequence[float] | np.ndarray,
    last_fraction: float = 2 / 3,
) -> dict[str, float]:
    """Least-squares slope of RSS over the last ``last_fraction`` of the samples (the start-up climb
    left out), in MiB per minute, with the half-width of its 95% confidence interval (Student's t,
    ``n − 2`` degrees of freedom).

    ``flat`` when the interval contains 0, or when the fitted drift over the window,
    ``|slope| × window``, is under 1% of the mean RSS there (a real but negligible slope). With fewer
    than 3 samples in the window there is no interval: ``ci95_mib_per_min`` is inf and ``flat`` False.
    """
    t = np.asarray(times_s, np.float64) / 60.0  # minutes
    y = np.asarray(rss_bytes, np.float64) / MIB
    if t.shape != y.shape:
        raise ValueError(f"times and RSS differ in length: {t.shape} vs {y.shape}")
    m = min(len(t), max(2, math.ceil(len(t) * last_fraction)))
    t, y = t[len(t) - m:], y[len(y) - m:]
    out = {"slope_mib_per_min": math.nan, "ci95_mib_per_min": math.inf, "window_s": 0.0,
           "mean_mib": float(y.mean()) if m else math.nan, "flat": False}
    if m < 2 or t[-1] <= t[0]:
        return out
    dt = t - t.mean()
    sxx = float(dt @ dt)
    slope = float(dt @ (y - y.mean())) / sxx
    out.update(slope_mib_per_min=slope, window_s=60.0 * float(t[-1] - t[0]))
    if m >= 3:
        resid = y - y.mean() - slope * dt
        ci = _t975(m - 2) * math.sqrt(float(resid @ resid) / (m - 2) / sxx)
        drift = abs(slope) * (t[-1] - t[0])  # MiB over the window
        out.update(ci95_mib_per_min=ci, flat=bool(abs(slope) <= ci or drift < _FLAT_DRIFT * out["mean_mib"]))
    return out


def fmt_mib(x: float | None) -> str:
    return "—" if x is None else f"{x / MIB:,.1f}"


def fmt_ms(x: float | None) -> str:
    return "—" if x is None else f"{1000 * x:,.1f}"


def fmt_num(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def cpu_pct(s: dict[str, Any], prev: dict[str, Any] | None, key: str) -> float | None:
    """A process's CPU use between two samples, in % of one core."""
    if prev is None or s.get(key) is None or prev.get(key) is None or s["t_s"] <= prev["t_s"]:
        return None
    return 100 * (s[key] - prev[key]) / (s["t_s"] - prev["t_s"])


def _slope_text(sl: dict[str, float]) -> str:
    return (f"{sl['slope_mib_per_min']:+.2f} ± {sl['ci95_mib_per_min']:.2f} MiB/min (95%)"
            f" over the last {sl['window_s'] / 60:.1f} min, mean {sl['mean_mib']:,.1f} MiB:"
            f" flat {'yes' if sl['flat'] else 'no'}")


def print_soak(report: dict[str, Any]) -> None:
    o, r, sl, lat = report["options"], report["rss"], report["rss"]["slope"], report["latency"]
    samples = report["samples"]

    def ends(key: str, fmt: Callable[[float | None], str]) -> tuple[str, str]:  # first and last values
        xs = [s[key] for s in samples if s.get(key) is not None]
        return (fmt(xs[0]), fmt(xs[-1])) if xs else ("—", "—")

    lags = [s["lag_messages"] for s in samples if s.get("lag_messages") is not None]
    rows = [
        ("worker RSS", f"start {fmt_mib(r['start_bytes'])} MiB   peak {fmt_mib(r['peak_bytes'])} MiB"
                       f"   final {fmt_mib(r['final_bytes'])} MiB"),
        ("RSS slope", _slope_text(sl)),
        ("state (users)", "first {} MiB   last {} MiB".format(*ends("state_bytes_users", fmt_mib))
                          + "   (files on disk: {} → {} MiB)".format(*ends("state_files_bytes", fmt_mib))),
        ("consumer lag", f"max {fmt_num(max(lags) if lags else None)} messages"),
        ("latency", f"p50 {fmt_ms(lat['p50_s'])} ms   p99 {fmt_ms(lat['p99_s'])} ms"),
        ("events produced", f"{report['events_produced']:,}   users introduced {report['users_introduced']:,}"
                            f"   users expired {ends('users_expired', fmt_num)[1]}"),
    ]
    less = r.get("slope_less_rocksdb")
    if less is not None and less["window_s"] > 0:
        rows.insert(2, ("less RocksDB", _slope_text(less)
                        + "   (RocksDB {} → {} MiB)".format(*ends("rocksdb_memory_bytes", fmt_mib))))
    broker = [(s["t_s"], pct) for prev, s in zip(samples, samples[1:])
              if (pct := cpu_pct(s, prev, "broker_cpu_s")) is not None]
    if broker:
        rows.append(("embedded broker", f"CPU {broker[0][1]:.0f}% → {broker[-1][1]:.0f}% of a core"))
    print(
        f"\nTIDE soak: {o['rate']:,.0f} events/s offered for {o['minutes']:g} min, {o['new_users_per_s']:g}"
        f" new users/s, user TTL {o['user_ttl_s']:g} s ({len(samples)} samples every {o['sample_s']:g} s)"
    )
    for name, text in rows:
        print(f"  {name:<17} {text}")
    busy = [t for t, pct in broker if pct >= _BROKER_BUSY_PCT]
    if busy:
        print(f"  warning: the embedded broker used ≥ {_BROKER_BUSY_PCT:.0f}% of a core from minute"
              f" {busy[0] / 60:.1f} on; from there the figures may show its limits, not the worker's")


def _arr(samples: list[dict[str, Any]], key: str, scale: float = 1.0) -> np.ndarray:
    return np.array([np.nan if s.get(key) is None else s[key] * scale for s in samples], np.float64)


def plot_soak(report: dict[str, Any], png: Path) -> None:
    """Four stacked panels against minutes: RSS with the fitted slope, state, consumer lag, latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples, o = report["samples"], report["options"]
    mins = _arr(samples, "t_s", 1 / 60)
    fig, (a_rss, a_state, a_lag, a_lat) = plt.subplots(4, 1, figsize=(9, 11), sharex=True)

    rss = _arr(samples, "rss_bytes", 1 / MIB)
    a_rss.plot(mins, rss, "o-", ms=3, color="tab:blue", label="worker RSS")
    sl = report["rss"]["slope"]
    if np.isfinite(sl["slope_mib_per_min"]) and sl["window_s"] > 0:
        ok = np.isfinite(rss)
        win = ok & (mins >= mins[ok][-1] - sl["window_s"] / 60 - 1e-9)
        tm = mins[win].mean()  # the least-squares line passes through the window's means
        x = np.array([mins[win][0], mins[win][-1]])
        a_rss.plot(
            x, sl["mean_mib"] + sl["slope_mib_per_min"] * (x - tm), "--", color="tab:red",
            label=f"fit {sl['slope_mib_per_min']:+.2f} ± {sl['ci95_mib_per_min']:.2f} MiB/min"
            f" ({'flat' if sl['flat'] else 'not flat'})",
        )
    rocks = _arr(samples, "rocksdb_memory_bytes", 1 / MIB)
    if np.isfinite(rocks).any():
        a_rss.plot(mins, rss - rocks, ".-", ms=2, color="tab:cyan", label="RSS less RocksDB caches")
        a_rss.plot(mins, rocks, ":", color="tab:gray", label="RocksDB block cache + memtables")
    a_rss.set_ylabel("RSS (MiB)")
    a_rss.legend(loc="lower right", fontsize=8)

    users_mib = _arr(samples, "state_bytes_users", 1 / MIB)
    disk_mib = _arr(samples, "state_files_bytes", 1 / MIB)
    a_state.plot(mins, users_mib, "o-", ms=3, label="users, RocksDB estimate")
    a_state.plot(mins, disk_mib, "s-", ms=3, label="files on disk")
    a_state.set_ylabel("state (MiB)")
    a_state.legend(loc="upper left", fontsize=8)

    a_lag.plot(mins, _arr(samples, "lag_messages"), "o-", ms=3, color="tab:purple", label="lag")
    a_lag.set_ylabel("consumer lag (messages)")
    cpu: dict[str, np.ndarray] = {}
    for who in ("worker", "broker"):
        pct = [cpu_pct(s, prev, f"{who}_cpu_s") for prev, s in zip([None, *samples], samples)]
        if any(x is not None for x in pct):
            cpu[who] = np.array([np.nan if x is None else x for x in pct])
    if cpu:  # who is saturated when the lag grows: the worker or the broker
        a_cpu = a_lag.twinx()
        for (who, pct), color in zip(cpu.items(), ("tab:green", "tab:gray")):
            a_cpu.plot(mins, pct, ":", color=color, label=f"{who} CPU")
        a_cpu.set_ylabel("CPU (% of a core)")
        a_cpu.set_ylim(bottom=0)
        a_cpu.legend(loc="upper right", fontsize=8)

    p50, p99 = _arr(samples, "p50_s", 1000), _arr(samples, "p99_s", 1000)
    a_lat.plot(mins, p50, "o-", ms=3, label="p50")
    a_lat.plot(mins, p99, "s-", ms=3, color="tab:red", label="p99")
    both = np.r_[p50, p99]
    both = both[np.isfinite(both) & (both > 0)]
    if len(both) and both.max() > 20 * both.min():
        a_lat.set_yscale("log")
    a_lat.set_ylabel("latency (ms)")
    a_lat.set_xlabel("minutes")
    a_lat.legend(loc="upper left", fontsize=8)

    for ax in (a_rss, a_state, a_lag, a_lat):
        ax.grid(alpha=0.3)
        if ax is not a_lat or a_lat.get_yscale() != "log":
            ax.set_ylim(bottom=0)
    fig.suptitle(
        f"TIDE soak: {o['rate']:,.0f} events/s offered, user TTL {o['user_ttl_s']:g} s,"
        f" {o['new_users_per_s']:g} new users/s"
    )
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
