"""Crash points for fault-injection tests: the worker kills its own process at a named point.

``TIDE_FAULT_CRASH_AT=<point>:<n>`` (read once, at import) makes the process send itself SIGKILL
the ``n``-th time it reaches ``point`` (1 = the first): no flush, no commit, no goodbye, exactly as
an OOM kill or a lost machine would. The points, in the order a micro-batch reaches them:

- ``decoded``: the batch is decoded, nothing folded;
- ``folded``: the user stage has folded it (mid-batch: nothing produced, nothing written);
- ``produced``: its recommendations are produced, in the batch's open transaction;
- ``item_stage``: the item stage has folded it;
- ``changelog``: the users' new state is produced to the changelog; no state written locally;
- ``state_written``: user and item state are written locally; the transaction is still open;
- ``learning``: an online-learning gradient is being computed on its own thread;
- ``committed``: the transaction (outputs, changelog, input offsets) has committed.

A test-only switch, not a setting: unset, a crash point costs one comparison.
"""

from __future__ import annotations

import os
import signal

__all__ = ["CRASH_POINTS", "arm", "crash_point"]

CRASH_POINTS = (
    "decoded", "folded", "produced", "item_stage", "changelog", "state_written", "learning", "committed",
)


def _parse(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    point, _, n = spec.partition(":")
    if point not in CRASH_POINTS:
        raise ValueError(
            f"TIDE_FAULT_CRASH_AT: unknown crash point {point!r}; known: {', '.join(CRASH_POINTS)}"
        )
    return point, int(n or 1)


_ARMED = _parse(os.environ.get("TIDE_FAULT_CRASH_AT"))
_seen: dict[str, int] = {}


def arm(spec: str | None) -> None:
    """Arm (or, with None, disarm) a crash point as ``TIDE_FAULT_CRASH_AT`` would, in a process
    that imported this module before its environment was set (a forked test worker)."""
    global _ARMED
    _ARMED = _parse(spec)
    _seen.clear()


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL if ``TIDE_FAULT_CRASH_AT`` names this visit of ``name``."""
    if _ARMED is None or _ARMED[0] != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] >= _ARMED[1]:
        os.kill(os.getpid(), signal.SIGKILL)
