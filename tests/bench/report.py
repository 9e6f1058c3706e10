"""The report: the table on stdout, the targets of issue 13, and the JSON files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import harness
from driver import BUSY_CPU, OUT_DIR, Run
from workloads import BASES, WorkloadResult

SATURATED_CPU = 0.90  # below this, the Envoy under test was not what limited a closed-loop run

# Issue 13: (what, workload, listener, base, minimum requests/s relative to the base's)
RATIO_TARGETS = (
    ("same token", "same", "wasm", "native_cached", 1.0),
    ("same token", "same", "wasm", "floor", 0.85),
    ("unique tokens", "unique", "wasm", "native", 1.0),
    ("pure-Rust path, unique tokens", "pure", "wasm_pure", "native", 0.7),
)
# Short column names for the bases.
BASE_LABEL = {"native_cached": "x cached", "floor": "x floor", "native": "x native",
              "none": "x none"}
ADDED_P99_TARGET_US = 100


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}" if base else "-"


def table(header: list[str], rows: list[list[str]]) -> str:
    """Text columns: the first two left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def target_results(workloads: list[WorkloadResult], latency: dict) -> list[dict]:
    by_name = {w.name: w for w in workloads}
    targets = []
    for what, workload, listener, base, minimum in RATIO_TARGETS:
        w = by_name.get(workload)
        measured = w and w.x(listener, base)
        if measured:
            rounds = w.x_rounds[base][listener]
            per_round = (f", median of rounds {', '.join(f'{r:.2f}' for r in rounds)}"
                         if len(rounds) > 1 else "")
            targets.append({"what": f"{what}: {listener} / {base}",
                            "measured": f"{measured:.2f}x{per_round}",
                            "target": f">= {minimum}x", "met": measured >= minimum})
    if latency:
        added = latency["added_p99_us"]["wasm"]
        targets.append({"what": "p99 added over none at half of wasm's peak: wasm",
                        "measured": f"{added:+.0f} us", "target": f"< {ADDED_P99_TARGET_US} us",
                        "met": added < ADDED_P99_TARGET_US})
    return targets


def targets_text(targets: list[dict]) -> str:
    return "\n".join(f"  {'met   ' if t['met'] else 'MISSED'}  {t['what']}: {t['measured']} "
                     f"(target {t['target']})" for t in targets)


def token_cache_note(runs: list[Run]) -> str:
    """The token caches' hit rates: this filter's (okta_jwt_token_cache_*) and jwt_authn's
    (jwt_authn.jwt_cache_*, which counts misses even without a cache)."""
    notes = []
    for r in runs:
        hits = sum(v for k, v in r.stats.items() if k.endswith("cache_hit"))
        misses = sum(v for k, v in r.stats.items() if k.endswith("cache_miss"))
        if hits + misses:
            notes.append(f"{r.listener}: token cache hit {hits / (hits + misses):.0%}")
    return f" ({', '.join(notes)})" if notes else ""


CPU_HEADER = "CPU% envoy/upstr/wrk/other"


def cpu_cell(run: Run) -> str:
    return "/".join(f"{run.cpu.get(n, 0):.0%}"[:-1] for n in ("envoy", "upstream", "wrk", "others"))


def cpu_notes(runs: list[Run]) -> str:
    notes = []
    busiest = max(runs, key=lambda r: r.cpu["others"], default=None)
    if busiest and busiest.cpu["others"] > BUSY_CPU:
        notes.append(f"WARNING: other processes kept {busiest.cpu['others']:.0%} of a CPU busy "
                     f"during {busiest.workload}/{busiest.listener}: these numbers are not "
                     "reliable; run again on an idle machine.")
    idle = [f"{r.workload}/{r.listener}" for r in runs
            if not r.target_rps and r.cpu["envoy"] < SATURATED_CPU]
    if idle:
        notes.append(f"The Envoy under test was busy less than {SATURATED_CPU:.0%} of the time "
                     f"in {', '.join(idle)}: there the round trips through wrk and the upstream, "
                     "not Envoy, bound rps; CPU us/req still compares the cost per request.")
    return "".join(f"\n{n}" for n in notes)


def report(workloads: list[WorkloadResult], latency: dict) -> tuple[str, list[dict]]:
    rounds = max((len(r.rps_rounds) for w in workloads for r in w.runs), default=1)
    rows = []
    for w in workloads:
        base = {r.listener: r for r in w.runs}
        for r in w.runs:
            none = base.get("none")
            spread = ([f"{min(r.rps_rounds):,.0f}-{max(r.rps_rounds):,.0f}"]
                      if rounds > 1 else [])
            ratios = [f"{x:.2f}" if (x := w.x(r.listener, b)) else "-" for b in BASES]
            rows.append([w.name, r.listener, f"{r.seconds:.1f}", f"{r.rps:,.0f}", *spread,
                         *ratios, f"{r.p50_us:,.0f}", f"{r.p99_us:,.0f}",
                         f"{r.envoy_cpu_us:.0f}",
                         f"{r.envoy_cpu_us - none.envoy_cpu_us:+.0f}" if none else "-",
                         f"{r.decision_us:.1f}" if r.decision_us is not None else "-",
                         " ".join(f"{s}:{n}" for s, n in r.statuses.items()),
                         mib(r.rss_after_kib), cpu_cell(r)])
    header = ["workload", "listener", "secs", "rps",
              *([f"rps in {rounds} rounds"] if rounds > 1 else []),
              *(BASE_LABEL[b] for b in BASES), "p50 us", "p99 us", "CPU us/req",
              "CPU - none", "decide us", "statuses", "RSS MiB", CPU_HEADER]
    out = [table(header, rows)]
    out.append("\nEnvoy RSS (MiB), idle -> after the workload: " + "; ".join(
        f"{w.name} " + ", ".join(f"{mib(idle)} -> {mib(after)}" for idle, after in w.rss_kib)
        for w in workloads))
    for w in workloads:
        if w.pool_size > 1:
            used = ", ".join(f"{r.listener} {r.requests / w.pool_size:.0%}" for r in w.runs)
            out.append(f"{w.name}: {w.pool_size} distinct tokens, each sent at most once; share "
                       f"used: {used}{token_cache_note(w.runs)}")
        elif note := token_cache_note(w.runs):
            out.append(f"{w.name}: one token{note}")
    runs = [r for w in workloads for r in w.runs]
    if latency:
        none = latency["runs"][0]
        runs += latency["runs"]
        out.append(f"\nSame token, paced at {latency['rate']:,.0f} rps (half of wasm's peak):")
        out.append(table(
            ["listener", "", "rps", "p50 us", "p99 us", "p99 - none", "CPU us/req", CPU_HEADER],
            [[r.listener, "", f"{r.rps:,.0f}", f"{r.p50_us:,.0f}", f"{r.p99_us:,.0f}",
              f"{r.p99_us - none.p99_us:+,.0f}", f"{r.envoy_cpu_us:.0f}", cpu_cell(r)]
             for r in latency["runs"]]))
        slices = latency["added_p99_slices_us"]
        out.append(f"({latency['slices']} interleaved slices of {latency['slice_seconds']} s "
                   f"per listener, latencies pooled; p99 added slice by slice: "
                   + "; ".join(f"{listener} {median_range(values)}"
                               for listener, values in slices.items()) + ")")
    targets = target_results(workloads, latency)
    out.append("\nx cached, x floor, x native, x none: requests/s over native_cached's, floor's, "
               "native's, none's\nin the same Envoy, median of the rounds' ratios. CPU - none: "
               "Envoy CPU us per request over none's. decide us: the filter's mean\n"
               "okta_jwt_decision_time_us over the run (the gate's time in the VM, host clock).")
    out.append("\nIssue 13 targets:")
    out.append(targets_text(targets) + cpu_notes(runs))
    return "\n".join(out), targets


def median_range(values: list[float]) -> str:
    """Median and range of per-slice numbers."""
    ordered = sorted(values)
    return (f"median {ordered[len(ordered) // 2]:+,.0f} us, "
            f"range {ordered[0]:+,.0f} to {ordered[-1]:+,.0f}")


def memory_report(m: dict) -> tuple[str, list[dict]]:
    targets = [
        {"what": f"RSS growth over idle, {m['tokens']} distinct tokens then {m['seconds']} s",
         "measured": f"{m['growth_mib']} MiB", "target": f"< {m['limit_mib']:g} MiB",
         "met": m["growth_mib"] < m["limit_mib"]},
        {"what": f"RSS drift during the {m['seconds']} s", "measured": f"{m['drift_mib']} MiB",
         "target": f"< {m['flat_mib']:g} MiB", "met": m["drift_mib"] < m["flat_mib"]},
    ]
    text = "\n".join([
        f"Envoy RSS: idle {mib(m['rss_idle_kib'])} MiB; after each of {m['tokens']} distinct "
        f"tokens was sent once {mib(m['rss_after_one_pass_kib'])} MiB; peak "
        f"{mib(m['rss_peak_kib'])} MiB",
        "RSS during them (s: MiB): " + " ".join(
            f"{t:.0f}:{mib(k)}" for t, k in m["samples"][::max(1, len(m["samples"]) // 12)]),
        "\nIssue 5 memory targets:", targets_text(targets)])
    return text, targets


def environment() -> dict:
    def output(*argv) -> str:
        try:
            return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                                  timeout=30, cwd=harness.REPO).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    wasm = harness.wasm_path()
    return {
        "envoy": output(harness.envoy_bin(), "--version").rpartition("version: ")[2],
        "wrk": output("wrk", "--version").split("\n", 1)[0],
        "cpus": len(os.sched_getaffinity(0)), "load_average": os.getloadavg(),
        "wasm": str(wasm), "wasm_sha256": hashlib.sha256(wasm.read_bytes()).hexdigest(),
        "wasm_bytes": wasm.stat().st_size,
        "git_commit": output("git", "rev-parse", "HEAD"),
        "git_dirty": bool(output("git", "status", "--porcelain", "--untracked-files=no")),
    }


def write_json(kind: str, data: dict) -> tuple[Path, Path]:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(data, indent=1, default=asdict) + "\n"
    path, latest = OUT_DIR / f"{kind}-{stamp}.json", OUT_DIR / (
        "latest.json" if kind == "bench" else f"latest-{kind}.json")
    path.write_text(text)
    latest.write_text(text)
    return path, latest
