#!/usr/bin/env python3
"""`make bench`: this filter next to Envoy's native jwt_authn (with and without its token cache)
and the wasm floor, in one Envoy, under wrk.

Processes, all on 127.0.0.1 with ports picked at run time, all stopped on exit:
  - the mock IdP (tests/mock-idp): it mints the tokens, and its key set is inlined into both
    filters' configurations (so no key fetch is measured);
  - the upstream: a second Envoy that answers 200 itself (envoy/bench-upstream.yaml.tmpl);
  - the Envoy under test (envoy/bench.yaml.tmpl, `--concurrency 1`) with listeners that route
    to that upstream: `none` (no auth filter), `native` (jwt_authn + RBAC on scope orders:read,
    no token cache: jwt_authn's default), `native_cached` (the same with jwt_authn's
    jwt_cache_config, sized for every token of the run), `floor` (benches/floor: the least a
    proxy-wasm auth filter can do: read the authorization header, remove it, set one header,
    401 without it), `wasm` (this filter, same policy, Envoy's BoringSSL through the foreign
    function), `wasm_pure` (this filter, pure-Rust signatures) and `wasm_alt` (the filter
    built another way, BENCH_WASM_ALT, measured beside `wasm` only when set). A fresh Envoy
    is started for each workload (and round), so no per-VM state such as a token cache
    carries over.

Workloads, each run as `wrk -t1 -c<connections> -d<seconds>s --latency` per listener, after a
1 s warm-up with one token (tests/bench/wrk.lua builds the requests and counts the statuses):
Every workload runs none, native, native_cached and floor, then the filter's listener(s):
  same     one valid token on every request, for BENCH_SECONDS;
  unique   a pool of BENCH_TOKENS distinct valid tokens, each sent once: the run ends when the
           pool is used up, or after BENCH_SECONDS (the table shows how long it lasted);
  invalid  as unique, with every 10th token invalid (half bad signature, half expired);
  pure     as unique, against wasm_pure, for at most BENCH_PURE_SECONDS;
then `same` again on none, native, native_cached, floor and wasm, paced at half of wasm's
closed-loop peak (wrk.lua
explains the pacer), in 3 x BENCH_ROUNDS short slices that take turns, each listener's latencies
pooled over its slices: the p99 latency each filter adds.

Ratios: every listener's requests/s over native_cached's, floor's, native's and none's, each
the median of the rounds' ratios (the runs of a round are seconds apart in one Envoy); and its
Envoy CPU time per request over none's.

Checks: before a workload, every listener answers one request per case (valid, no token, bad
signature, expired, scope missing) as its policy requires (none: always 200; floor: 401 only
without a token); after every run, the statuses must be what the workload implies (all 200;
10% 401 from the checking listeners under `invalid`), with
no socket error. A deviation fails the benchmark (exit 1): a listener that rejects everything
would look fast. Each run also records the CPU time of the Envoy under test per request (its
cost, meaningful even when the round trips, not Envoy, bound rps), how busy each process was,
and how much CPU other processes took: on a busy machine the numbers mean little, and the report
says so (before each run, it waits up to BENCH_IDLE_WAIT s for the machine to be quiet).

Output: a table on stdout, and the same as JSON in target/bench/bench-<UTC time>.json and
target/bench/latest.json. Logs, rendered configurations and wrk's output are in
target/bench/work/ (emptied at each start). Minted tokens are kept in target/bench/tokens/ for
the next runs while they are valid (the IdP keeps its keys in target/bench/idp-keys/).

BENCH_MEMORY=1 (`make bench-memory`) runs the memory check of issue 5 instead: BENCH_MEMORY_TOKENS
distinct valid tokens sent once to `wasm`, then in turn for BENCH_MEMORY_SECONDS; Envoy's RSS must
stay below its idle RSS + BENCH_MEMORY_LIMIT_MIB, and move by less than BENCH_MEMORY_FLAT_MIB
during the second phase. JSON: target/bench/memory-<UTC time>.json and latest-memory.json.

Environment (defaults, and the quick ones, in driver.DEFAULTS): BENCH_QUICK=1 (a smoke run: 2 s runs,
3000 tokens), BENCH_SECONDS, BENCH_PURE_SECONDS, BENCH_TOKENS, BENCH_CONNECTIONS,
BENCH_WORKLOADS (a comma list), BENCH_ROUNDS (run every workload that many times, each in a
fresh Envoy, and report each listener's median run, preferring quiet ones), BENCH_PIN (1: the
Envoy under test alone on the last CPU, wrk and the upstream on the others), BENCH_IDLE_WAIT,
BENCH_MEMORY, BENCH_MEMORY_TOKENS, BENCH_MEMORY_SECONDS, BENCH_MEMORY_LIMIT_MIB,
BENCH_MEMORY_FLAT_MIB, BENCH_ENFORCE_TARGETS=1 (exit 1 when a target of issue 13 is missed, too),
BENCH_WASM_ALT (a path: another build of the filter, e.g. at opt-level 3, measured as wasm_alt
in the same, unique and invalid workloads). OKTA_JWT_WASM, ENVOY_BIN and MOCK_IDP_BIN as for
the integration tests; FLOOR_WASM for the floor (default: what `make bench-crates` builds).

Modules: this file (the steps in order), driver.py (settings, processes, wrk, one measured run),
workloads.py (tokens, pre-flight checks, the workloads and how their runs combine), report.py
(the table, the targets, the JSON).
"""

from __future__ import annotations

import shutil
import signal
import sys
from datetime import datetime, timezone

from driver import (HOST, IDP_KEY_DIR, IDP_PUBLIC_URL, WORK_DIR, BenchError, Context, Settings,
                    start_upstream)
import harness  # noqa: E402  (on sys.path once driver is imported)
from idp_client import IdpClient  # noqa: E402
from report import environment, memory_report, report, write_json  # noqa: E402
from workloads import (INVALID_EVERY, NAMES, TokenStore, make_tokens, memory_check,  # noqa: E402
                       run_workloads)


def main() -> int:
    # A plain SIGTERM would skip atexit, which stops every child (harness._stop_everything).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        settings = Settings.from_env(NAMES, INVALID_EVERY)
        if not shutil.which("wrk"):
            raise BenchError("wrk is not installed (Debian: apt-get install wrk)")
        if settings.pin and not shutil.which("taskset"):
            raise BenchError("BENCH_PIN=1 needs taskset (Debian: util-linux)")
        shutil.rmtree(WORK_DIR, ignore_errors=True)
        WORK_DIR.mkdir(parents=True)
        data = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "settings": settings, "environment": environment(),
                "upstream": "a second Envoy (--concurrency 1) answering 200 (direct_response)",
                "logs": str(WORK_DIR)}
        IDP_KEY_DIR.mkdir(parents=True, exist_ok=True)
        _, idp_url = harness.start_mock("mock-idp", WORK_DIR, [
            "--listen", f"{HOST}:0", "--key-dir", IDP_KEY_DIR, "--public-url", IDP_PUBLIC_URL])
        idp = IdpClient(idp_url, timeout=120)  # a mint-many call signs MINT_CHUNK tokens
        jwks = idp.keys()
        store = TokenStore(idp, kid=jwks["keys"][0]["kid"])
        ctx = Context(settings, idp, f"{IDP_PUBLIC_URL}/oauth2/default", jwks,
                      upstream=start_upstream(settings))
        if settings.memory:
            m = memory_check(ctx, store)
            text, targets = memory_report(m)
            data |= {"memory": m}
        else:
            tokens = make_tokens(store, settings.tokens, "invalid" in settings.workloads)
            workloads, latency = run_workloads(ctx, tokens)
            text, targets = report(workloads, latency)
            data |= {"workloads": workloads, "latency": latency}
        data |= {"targets": targets, "failures": ctx.failures, "warnings": ctx.warnings}
        path, latest = write_json("memory" if settings.memory else "bench", data)
    except (harness.HarnessError, OSError, ValueError) as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 1
    print(text)
    if ctx.warnings:
        print("\nWarnings:\n  " + "\n  ".join(ctx.warnings))
    print(f"\nJSON: {path} (also {latest.name}); logs: {WORK_DIR}")
    if ctx.failures:
        print("\nbench: FAILED, these runs did not measure what they should:\n  "
              + "\n  ".join(ctx.failures), file=sys.stderr)
        return 1
    if settings.enforce_targets and not all(t["met"] for t in targets):
        print("bench: a target is missed (BENCH_ENFORCE_TARGETS=1)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
