"""`make bench`: every benchmark, one after the other, then a summary of the figures.

Each figure is a ratio measured in the same run against its baseline (see each module's docstring).
Everything runs on 127.0.0.1 against the fakes and throwaway databases on the pipeline's server
(DATABASE_URL or the embedded one), which every benchmark drops when it is done.

Log level WARNING unless LOG_LEVEL is set: the benchmarks measure the pipeline, not log rendering
(at INFO, emit writes one line per acknowledged event).
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Callable

os.environ.setdefault("LOG_LEVEL", "WARNING")

from benchmarks import (  # imported after the log level is set
    dashboard_queries,
    emit_bench,
    freshness_bench,
    memory_bench,
    poll_bench,
    record_bench,
    scale_bench,
)


def machine() -> str:
    cpus = os.cpu_count()
    with open("/proc/meminfo") as f:
        total_kib = int(f.readline().split()[1])
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return f"{platform.machine()}, {cpus} vCPU, {total_kib / 2**20:.0f} GiB RAM; uptime: {load}"


def main() -> int:
    print(f"machine: {machine()}\n", flush=True)
    benches: list[tuple[str, Callable[[], object]]] = [
        ("emit", emit_bench.main),
        ("record", record_bench.main),
        ("steady poll", poll_bench.main),
        ("memory", memory_bench.main),
        ("freshness", freshness_bench.main),
        ("dashboard", lambda: dashboard_queries.main(["--repeat", "3"])),
        ("scale", scale_bench.main),
    ]
    figures: dict[str, float] = {}
    started = time.monotonic()
    for name, bench in benches:
        start = time.monotonic()
        result = bench()
        if isinstance(result, dict):
            figures |= result
        print(f"  ({name}: {time.monotonic() - start:.0f} s)\n", flush=True)

    f = figures
    rows = [
        ("emit throughput, 127.0.0.1 (emit_due vs one POST per event)",
         f"{f['emit_local_events_per_s']:,.0f} vs {f['naive_local_events_per_s']:,.0f} events/s",
         f"{f['emit_local_ratio']:.0f}x", ">= 50x"),
        ("emit throughput, +50 ms per answer (WAN-like)",
         f"{f['emit_wan_events_per_s']:,.0f} vs {f['naive_wan_events_per_s']:,.0f} events/s",
         f"{f['emit_wan_ratio']:.0f}x", ">= 50x"),
        ("record 10,000 new posts, empty database", f"{f['record_posts_per_s']:,.0f} posts/s", "", ">= 20,000/s"),
        ("record 10,000 with 1,000,000 recorded, time vs empty", "", f"{f['full_vs_empty']:.2f}x", "<= 1.1x"),
        ("steady poll, nothing new: /new requests (first poll of 1,000)",
         f"{f['steady_new_requests']:.0f} (first: {f['first_new_requests']:.0f})",
         f"{f['steady_new_requests'] / f['first_new_requests']:.2f}x", "1 request"),
        ("steady poll: database statements (first poll)",
         f"{f['steady_round_trips']:.0f} (first: {f['first_round_trips']:.0f}); "
         f"{f['steady_checkouts']:.0f} connection checkouts",
         f"{f['steady_round_trips'] / f['first_round_trips']:.2f}x", ""),
        ("peak memory of a poll, 1M posts vs empty",
         f"{f['poll_peak_mib_full']:.1f} vs {f['poll_peak_mib_empty']:.1f} MiB",
         f"{f['poll_memory_ratio']:.2f}x", "flat"),
        ("peak memory of an emit, 1M posts vs empty",
         f"{f['emit_peak_mib_full']:.1f} vs {f['emit_peak_mib_empty']:.1f} MiB",
         f"{f['emit_memory_ratio']:.2f}x", "flat"),
        (f"freshness p50 / p95, poll+emit every {f['freshness_period_s']:g} s",
         f"{f['freshness_p50_s']:.2f} s / {f['freshness_p95_s']:.2f} s",
         f"{f['freshness_p50_s'] / f['freshness_period_s']:.2f}x / "
         f"{f['freshness_p95_s'] / f['freshness_period_s']:.2f}x of the period", ""),
    ]
    print(f"summary ({time.monotonic() - started:.0f} s in all; dashboard query times in the table above)\n")
    print("| benchmark | measured | ratio | goal |\n|---|---|---|---|")
    for name, measured, ratio, goal in rows:
        print(f"| {name} | {measured} | {ratio} | {goal} |")
    print(f"\nmachine: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
