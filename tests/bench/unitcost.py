#!/usr/bin/env python3
"""`make bench-unitcost`: what one proxy-wasm host call costs in Envoy's V8, call by call.

One Envoy under test (`--concurrency 1`) with four listeners routing to the bench's upstream
(a second Envoy answering 200): `none` (no filter), `noop` (benches/unitcost configured
`noop`: its stream callbacks run and return at once), `floor` (benches/floor, as in `make
bench`) and `unit` (benches/unitcost configured `dispatch`: each request runs the host call
named in `x-unit-op`, `x-unit-n` times). For each call, closed-loop wrk runs at N = 0 and
N = UNITCOST_N take turns for UNITCOST_ROUNDS rounds; the unit cost is the median over rounds
of (Envoy CPU us per request at N - at 0) / N. CPU time per request, not rps, because wrk and
the upstream share the machine's cores with the Envoy under test.

Every request carries an `authorization: Bearer <733 characters>` header (the length of the
bench's RS256 tokens), so the header map has the bench's size; the `map` call logs the size of
the map as Envoy serializes it.

Environment: UNITCOST_N (default 50), UNITCOST_SECONDS (4; quick 2), UNITCOST_ROUNDS (3; quick
1), UNITCOST_OPS (a comma list, default all), BENCH_QUICK, BENCH_CONNECTIONS (8),
BENCH_IDLE_WAIT (30; quick 10). ENVOY_BIN as for the integration tests. Output: a table, and
target/bench/unitcost-<UTC time>.json (also latest-unitcost.json).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

from driver import (BENCH_CRATES_DIR, HOST, PATH, WORK_DIR, BenchError, CpuMeter, Envoy, log,
                    start_envoy, start_upstream, wait_for_idle, wrk)
import harness  # noqa: E402  (on sys.path once driver is imported)
from report import environment, table, write_json  # noqa: E402

# op: what it calls (benches/unitcost/src/lib.rs)
OPS = {
    "map": "get_header_map_pairs (request headers, the whole map: what the filter reads)",
    "header": "get_header_map_value (authorization, present)",
    "header_absent": "get_header_map_value (absent header)",
    "remove_absent": "remove_header_map_value (absent header)",
    "set": "replace_header_map_value (x-unit: 1)",
    "set_remove": "replace then remove_header_map_value (x-unit): remove present = this - set",
    "property_absent": "get_property (connection.sha256_peer_certificate_digest, absent)",
    "property": "get_property (source.address)",
    "shared_get": "get_shared_data (64-byte value)",
    "time": "get_current_time_nanoseconds",
    "counter": "increment_metric",
    "histogram": "record_metric (histogram)",
}
TOKEN = "Bearer " + "x" * 733
LISTENERS = ("none", "noop", "floor", "unit")


def number(name: str, default: float, quick: float) -> int:
    raw = os.environ.get(name, "").strip()
    quick_run = os.environ.get("BENCH_QUICK", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        return int(float(raw)) if raw else int(quick if quick_run else default)
    except ValueError:
        raise BenchError(f"{name}={raw!r} is not a number") from None


def wasm_filter(name: str, path: Path, configuration: str | None) -> dict:
    config = {"name": name, "root_id": name,
              "vm_config": {"vm_id": name, "runtime": "envoy.wasm.runtime.v8",
                            "code": {"local": {"filename": str(path)}}},
              "fail_open": False}
    if configuration is not None:
        config["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                   "value": configuration}
    return {"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": config}}


def bootstrap(ports: dict, upstream_port: int, unit: Path, floor: Path) -> dict:
    filters = {"none": [], "noop": [wasm_filter("noop", unit, "noop")],
               "floor": [wasm_filter("floor", floor, None)],
               "unit": [wasm_filter("unit", unit, "dispatch")]}
    router = {"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
    route = {"name": "all", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]}]}

    def listener(name: str) -> dict:
        hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network."
                        "http_connection_manager.v3.HttpConnectionManager",
               "stat_prefix": name, "route_config": route,
               "http_filters": [*filters[name], router]}
        return {"name": name,
                "address": {"socket_address": {"address": HOST, "port_value": ports[name]}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm}]}]}

    return {"admin": {"address": {"socket_address": {"address": HOST,
                                                     "port_value": ports["ADMIN_PORT"]}}},
            "static_resources": {
                "listeners": [listener(n) for n in LISTENERS],
                "clusters": [{"name": "upstream", "type": "STATIC", "connect_timeout": "2s",
                              "load_assignment": {"cluster_name": "upstream", "endpoints": [{
                                  "lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                                      "address": HOST, "port_value": upstream_port}}}}]}]}}]}}


def run(ctx, envoy: Envoy, upstream: Envoy, listener: str, seconds: int, label: str,
        headers: dict[str, str] | None = None) -> dict:
    """One closed-loop run after a 1 s warm-up: rps and Envoy CPU us per request."""
    url = envoy.url(listener)
    headers = {"authorization": TOKEN, **(headers or {})}
    wait_for_idle(ctx, {"envoy": envoy.pid, "upstream": upstream.pid})
    wrk(ctx, f"unit-{label}-warmup", url, 1, headers=headers)
    cpu = CpuMeter({"envoy": envoy.pid, "upstream": upstream.pid})
    r = wrk(ctx, f"unit-{label}", url, seconds, headers=headers)
    cpu.stop()
    requests = int(r["requests"])
    if set(r["statuses"]) != {"200"} or any(v for k, v in r["errors"].items() if k != "status"):
        raise BenchError(f"{label}: statuses {r['statuses']}, errors {r['errors']}")
    out = {"requests": requests, "rps": round(requests / (r["duration_us"] / 1e6), 1),
           "envoy_cpu_us": round(cpu.seconds["envoy"] * 1e6 / max(1, requests), 2),
           "others_cpu": cpu.shares()["others"]}
    log(f"  {label}: {out['rps']:,.0f} rps, Envoy {out['envoy_cpu_us']:.1f} us CPU/request, "
        f"others {out['others_cpu']:.0%}")
    return out


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        n = number("UNITCOST_N", 50, 50)
        seconds = number("UNITCOST_SECONDS", 4, 2)
        rounds = number("UNITCOST_ROUNDS", 3, 1)
        ops = [o.strip() for o in os.environ.get("UNITCOST_OPS", "").split(",") if o.strip()]
        ops = ops or list(OPS)
        if unknown := [o for o in ops if o not in OPS]:
            raise BenchError(f"UNITCOST_OPS: no op {', '.join(unknown)} (there are "
                             f"{', '.join(OPS)})")
        if not 1 <= n <= 1000:
            raise BenchError("UNITCOST_N must be 1..1000 (benches/unitcost's MAX_N)")
        unit = harness._artifact("UNITCOST_WASM", BENCH_CRATES_DIR / "bench_unitcost.wasm",
                                 "bench-crates")
        floor = harness._artifact("FLOOR_WASM", BENCH_CRATES_DIR / "bench_floor.wasm",
                                  "bench-crates")
        if not shutil.which("wrk"):
            raise BenchError("wrk is not installed (Debian: apt-get install wrk)")
        settings = SimpleNamespace(
            connections=number("BENCH_CONNECTIONS", 8, 8),
            idle_wait=number("BENCH_IDLE_WAIT", 30, 10), pin=False, cpus=lambda **_: [])
        ctx = SimpleNamespace(settings=settings)
        shutil.rmtree(WORK_DIR, ignore_errors=True)
        WORK_DIR.mkdir(parents=True)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        upstream = start_upstream(settings)

        def write(path: Path, ports: dict) -> None:
            path.write_text(json.dumps(bootstrap(ports, upstream.ports["upstream"], unit,
                                                 floor), indent=1))

        envoy = start_envoy("envoy-unitcost", LISTENERS, write, [])
        try:
            baseline = {name: [] for name in ("none", "noop", "floor")}
            results = {op: {"n0": [], "n": []} for op in ops}
            for round_ in range(1, rounds + 1):
                log(f"round {round_}/{rounds}")
                for name in baseline:
                    baseline[name].append(run(ctx, envoy, upstream, name, seconds,
                                              f"{name}-{round_}"))
                for op in ops:
                    for key, count in (("n0", 0), ("n", n)):
                        results[op][key].append(run(
                            ctx, envoy, upstream, "unit", seconds, f"{op}-{count}-{round_}",
                            {"x-unit-op": op, "x-unit-n": str(count)}))
            map_line = re.search(r"unitcost: request header map: (\d+) pairs, (\d+) bytes",
                                 envoy.proc.stderr())
        finally:
            envoy.proc.stop()
            upstream.proc.stop()
    except (harness.HarnessError, OSError, ValueError) as e:
        print(f"unitcost: error: {e}", file=sys.stderr)
        return 1

    rows, units = [], {}
    for name, runs in baseline.items():
        cpu = median([r["envoy_cpu_us"] for r in runs])
        over = cpu - median([r["envoy_cpu_us"] for r in baseline["none"]])
        rows.append([name, "-", f"{median([r['rps'] for r in runs]):,.0f}", f"{cpu:.1f}",
                     f"{over:+.1f}" if name != "none" else "", "", ""])
    for op, r in results.items():
        per_round = [(b["envoy_cpu_us"] - a["envoy_cpu_us"]) / n * 1000
                     for a, b in zip(r["n0"], r["n"])]
        unit_ns = median(per_round)
        units[op] = {"unit_ns": round(unit_ns), "per_round_ns": [round(v) for v in per_round],
                     "what": OPS[op]}
        rows.append([op, str(n), f"{median([x['rps'] for x in r['n']]):,.0f}",
                     f"{median([x['envoy_cpu_us'] for x in r['n0']]):.1f} -> "
                     f"{median([x['envoy_cpu_us'] for x in r['n']]):.1f}", "",
                     f"{unit_ns:,.0f}",
                     ", ".join(f"{v:,.0f}" for v in per_round) if rounds > 1 else ""])
    text = [table(["listener / call", "N", "rps", "Envoy CPU us/req (N=0 -> N)",
                   "over none us", "ns per call", "per round"], rows)]
    text.append("\nnoop: benches/unitcost's callbacks doing nothing; floor: benches/floor; "
                "ns per call: median over rounds of (CPU/req at N - at 0) / N.")
    if map_line:
        text.append(f"Request header map (what the filter copies on every request): "
                    f"{map_line[1]} pairs, {map_line[2]} bytes as Envoy serializes it.")
    busy = max((x["others_cpu"] for r in results.values() for k in r.values() for x in k),
               default=0)
    if busy > 0.10:
        text.append(f"WARNING: other processes kept up to {busy:.0%} of a CPU busy during a run: "
                    "these numbers are not reliable.")
    data = {"started": started, "environment": environment(), "n": n, "seconds": seconds,
            "rounds": rounds, "baseline": baseline, "runs": results, "unit_cost": units,
            "header_map": ({"pairs": int(map_line[1]), "bytes": int(map_line[2])}
                           if map_line else None)}
    path, latest = write_json("unitcost", data)
    print("\n".join(text))
    print(f"\nJSON: {path} (also {latest.name}); logs: {WORK_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
