"""``tide bench``: the engine against the raw Kafka pipe and against itself with a no-op model.

For each mode, on fresh topics of the embedded broker (or a given cluster):

1. fill the input topic with the workload (events of a CSV log, or synthetic), as fast as possible;
2. start the mode in a process of its own (so its CPU time and peak RSS are its own) and let it
   drain that backlog: throughput is the median of the per-window rates (events folded per second,
   and likewise recommendations emitted per second);
3. produce at a fixed offered rate for a while, each event stamped with the wall clock: latency is
   the recommendation's Kafka timestamp minus the stamp of the event it answers.

Modes: ``raw_pipe`` (a plain confluent-kafka loop: consume, decode and validate, produce a
10-item recommendation per event), ``noop`` (the TIDE worker with the engine's ``NoopPipeline``: a fixed
recommendation per user per batch, no state, no model), ``engine`` (the full worker).

The package: :mod:`~streams.bench.options` (what to run), :mod:`~streams.bench.workload` (the
events and pre-written state), :mod:`~streams.bench.modes` (what runs in a mode's
process), :mod:`~streams.bench.measure` (one mode's run, from the parent),
:mod:`~streams.bench.run` (every mode and the report), :mod:`~streams.bench.report` (table, JSON,
plot), :mod:`~streams.bench.topk`, :mod:`~streams.bench.scaling`, :mod:`~streams.bench.fleet` (fleets of
worker processes, ``--workers``), :mod:`~streams.bench.restore` (changelog restore time,
``--restore-users``) and :mod:`~streams.bench.faust_tables` (Faust's tables for the same job).
Heavy imports (torch, the worker, Kafka clients) wait until a bench runs, so the command line can
read the defaults cheaply.
"""

from __future__ import annotations

from streams.bench.measure import median_window_rate
from streams.bench.options import MODES, BenchOptions
from streams.bench.report import print_table, write_report
from streams.bench.run import run_bench
from streams.bench.scaling import run_scaling
from streams.bench.topk import topk_cost

__all__ = [
    "MODES",
    "BenchOptions",
    "median_window_rate",
    "print_table",
    "run_bench",
    "run_scaling",
    "topk_cost",
    "write_report",
]
