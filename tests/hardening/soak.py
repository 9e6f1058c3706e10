#!/usr/bin/env python3
"""`make soak SOAK_SECONDS=600`: valid traffic at half the filter's peak rate through key
rotations and a JWKS outage, with Envoy's memory and the key fetches watched.

Processes (harness: ports picked at run time, all stopped on exit): the mock IdP with
`--max-age SOAK_MAX_AGE` (35 s), the echo upstream, Envoy (two workers) with one provider
(jwks `min_refetch_interval_s` 30, `timeout_ms` 5000; the IdP's Cache-Control sets the
freshness) and one rule (GET /api/orders, scope orders:read).

Steps:
 1. peak: wrk closed loop (-t1 -c8, tests/bench/wrk.lua) with one valid token for
    SOAK_PEAK_SECONDS; the soak's rate is half of it (SOAK_RATE overrides).
 2. soak, for SOAK_SECONDS: wrk paced by wrk.lua's pacer (wrk2 is not packaged) at that rate,
    with a pool of SOAK_POOL distinct valid tokens. At t = 0, 60, 120 ... the IdP rotates
    (`/control/rotate`: a new key first, the oldest dropped, two published), a new pool is
    minted with the new key at once and a new wrk takes over from the old one (whose tokens are
    still valid: their key is still published). So the first requests after each rotation carry
    a kid the filter has never seen: it must refetch and pass them. From 60k+25 s to 60k+45 s,
    with k the interval holding the middle of the run, `/v1/keys` answers 500 (`/control/fault`):
    the routine refresh due then fails and retries, and the cached keys keep serving.
    Envoy's RSS (/proc/<pid>/status VmRSS) is read every 10 s.
 3. checks (exit 1 on any failure):
    - every response 2xx, no socket error;
    - RSS flat: max over the samples from 20% of the run on <= the sample at 20% +
      SOAK_RSS_MARGIN_MIB (8 MiB: tcmalloc and V8 move in MiB steps and Wasm memory only grows;
      a leak of 20 bytes a request at this rate is over that within the run);
    - key fetches: the IdP's count of GET /oauth2/default/v1/keys equals the filter's
      okta_jwt_jwks_fetch_success + failure, and successes, failures and unknown-kid refetches
      each fall within the range predicted by simulating SPEC.md's cache rules ("Unknown kid and
      key rotation") over the run's actual timeline (rotations, pool switches, outage), with the
      back-off jitter at both ends (0 and 25%), plus or minus one for a fetch at an edge;
    - Envoy's log has no VM failure, no VM was recreated, Envoy still runs.
Output: a table on stdout; target/soak/soak.json (everything) and target/soak/rss.csv.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import common
from common import harness, log

sys.path.insert(0, str(common.HERE.parent / "integration"))
from filter_config import filter_config  # noqa: E402

TAG = "soak"
PATH = "/api/orders"
WRK_SCRIPT = common.HERE.parent / "bench" / "wrk.lua"
ROTATE_EVERY_S = 60
OUTAGE_OFFSET_S, OUTAGE_S = 25, 20
SAMPLE_EVERY_S = 10
MIN_REFETCH_S = 30
CACHE_DURATION_S = 300  # the IdP's max-age wins for freshness; this caps the retry back-off
CONNECTIONS = 8
CONFIG = filter_config(
    {"okta": {"server": "default",
              "jwks": {"timeout_ms": 5000, "cache_duration_s": CACHE_DURATION_S,
                       "min_refetch_interval_s": MIN_REFETCH_S}}},
    [{"match": {"prefix": PATH, "methods": ["GET"]}, "providers": ["okta"],
      "scopes": {"all": ["orders:read"]}}])
VM_CREATED = r"^wasm\.envoy\.wasm\.runtime\.v8\.created$"
JWKS_STATS = r"okta_jwt_jwks_(fetch_success|fetch_failure|refetch_unknown_kid|age_s)_okta$"


class Wrk:
    """One wrk run against the stack (tests/bench/wrk.lua builds the requests)."""

    def __init__(self, name: str, workdir: Path, url: str, seconds: int, *, token: str = "",
                 token_file: Path | None = None, rate: float = 0):
        self.result = workdir / f"wrk-{name}.json"
        self.result.unlink(missing_ok=True)
        env = {"BENCH_PATH": PATH, "BENCH_TOKEN": token, "BENCH_TOKEN_FILE": str(token_file or ""),
               "BENCH_ONE_PASS": "", "BENCH_RATE": f"{rate:.1f}" if rate else "",
               "BENCH_RESULT_FILE": str(self.result), "BENCH_QUANTILES": ""}
        self.seconds = seconds
        self.proc = harness.Process(f"wrk-{name}", [
            "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "5s", "-s", WRK_SCRIPT,
            url + PATH], workdir, env=env)

    def finish(self, interrupt: bool) -> dict:
        """Stop it (SIGINT: wrk reports as usual) or wait for its end; its results."""
        if interrupt and self.proc.alive:
            self.proc.popen.send_signal(signal.SIGINT)
        try:
            self.proc.popen.wait(timeout=(5 if interrupt else self.seconds + 60))
        except subprocess.TimeoutExpired:
            self.proc.stop()
            raise harness.HarnessError(f"wrk did not stop\n{self.proc.tail()}")
        if not self.result.exists():
            raise harness.HarnessError(f"wrk wrote no result\n{self.proc.tail()}")
        return json.loads(self.result.read_text())


def non_2xx(r: dict) -> int:
    bad = sum(int(n) for s, n in r["statuses"].items() if not 200 <= int(s) < 300)
    sockets = sum(int(v) for k, v in r["errors"].items() if k != "status")
    return bad + sockets


# --- the cache rules, simulated ---------------------------------------------------------

def simulate(*, end: float, rotations: list[float], switches: list[float],
             outage: tuple[float, float], fresh_s: float, first_due: float,
             jitter: float, step: float = 0.05) -> dict:
    """SPEC.md "Unknown kid and key rotation" over the run's timeline (seconds from its start):
    a routine fetch when the key set's freshness ends (IdP max-age); a refetch when traffic
    carries a kid the set lacks (no more often than min_refetch_interval_s); a failed fetch
    keeps the set and retries after 1 s, 2 s, 4 s ... (capped at cache_duration_s) times
    (1 + jitter). Traffic after switch i carries keys of IdP generation i + 1."""
    next_at, last_refetch = first_due, None
    idp_gen = known_gen = 0
    streak = 0
    out = {"success": 0, "failure": 0, "unknown_kid": 0, "refused_kid": 0}

    def fetch(t: float) -> None:
        nonlocal next_at, known_gen, streak
        if outage[0] <= t < outage[1]:
            out["failure"] += 1
            streak += 1
            next_at = t + min(2 ** (streak - 1), CACHE_DURATION_S) * (1 + jitter)
        else:
            out["success"] += 1
            streak = 0
            known_gen = idp_gen
            next_at = t + fresh_s

    t = 0.0
    while t < end:
        idp_gen = sum(1 for r in rotations if r <= t)
        wanted = sum(1 for s in switches if s <= t)
        if t >= next_at:
            fetch(t)
        if wanted > known_gen:
            if last_refetch is None or t >= last_refetch + MIN_REFETCH_S:
                last_refetch = t
                out["unknown_kid"] += 1
                fetch(t)
            else:
                out["refused_kid"] += 1
        t += step
    return out


def predict(**timeline) -> dict[str, tuple[int, int]]:
    runs = [simulate(**timeline, jitter=j) for j in (0.0, 0.125, 0.25)]
    return {k: (min(r[k] for r in runs), max(r[k] for r in runs)) for k in runs[0]}


# --- the run ----------------------------------------------------------------------------

def main() -> int:
    seconds = int(common.number("SOAK_SECONDS", 600, 2 * ROTATE_EVERY_S))
    peak_seconds = int(common.number("SOAK_PEAK_SECONDS", 10, 2))
    pool_size = int(common.number("SOAK_POOL", 50, 1))
    max_age = int(common.number("SOAK_MAX_AGE", 35, 30))
    margin_mib = common.number("SOAK_RSS_MARGIN_MIB", 8, 0)
    rate_override = common.number("SOAK_RATE", 0, 0)
    out = common.out_dir("soak")
    work = out / "work"
    log(TAG, f"{seconds} s; {common.machine_load()}")
    stack = harness.start_stack(work, filter_config=CONFIG, idp_args=["--max-age", str(max_age)])
    envoy_proc = stack.processes["envoy"]
    problems: list[str] = []
    try:
        idp = common.IdpClient(stack.idp_url)
        envoy = common.EnvoyClient(stack.envoy_url, stack.admin_url)
        pid = envoy_proc.popen.pid

        def mint_pool(name: str) -> Path:
            tokens = idp.control("mint-many", {"count": pool_size, "server": "default"})["tokens"]
            path = work / f"tokens-{name}.txt"
            path.write_text("\n".join(tokens) + "\n")
            return path

        # 1. the peak, closed loop
        token = idp.mint()
        assert envoy.get(PATH, token).status == 200, "a valid token is refused before the soak"
        Wrk("warmup", work, stack.envoy_url, 2, token=token).finish(interrupt=False)
        peak_run = Wrk("peak", work, stack.envoy_url, peak_seconds, token=token).finish(
            interrupt=False)
        peak = peak_run["requests"] / (peak_run["duration_us"] / 1e6)
        if non_2xx(peak_run):
            problems.append(f"the peak run had non-2xx answers: {peak_run['statuses']} "
                            f"{peak_run['errors']}")
        rate = rate_override or peak / 2
        log(TAG, f"peak {peak:,.0f} rps (closed loop, {CONNECTIONS} connections); soak at "
                 f"{rate:,.0f} rps; {common.machine_load()}")

        # 2. the soak
        vms_before = envoy.stats(VM_CREATED)
        jwks_before = envoy.stats(JWKS_STATS)
        idp.control("reset", {})  # counts from here (POST)
        mid_interval = (seconds // 2) // ROTATE_EVERY_S
        outage = (mid_interval * ROTATE_EVERY_S + OUTAGE_OFFSET_S,
                  mid_interval * ROTATE_EVERY_S + OUTAGE_OFFSET_S + OUTAGE_S)
        if outage[1] > seconds:
            raise SystemExit(f"SOAK_SECONDS={seconds}: the outage would not fit")
        age = next((v for k, v in jwks_before.items() if "age_s" in k), 0)
        first_due = max(0.0, max_age - age)
        t0 = time.monotonic()
        rotations, switches, samples, segments, events = [], [], [], [], []
        current: Wrk | None = None
        next_rotation, next_sample = 0.0, 0.0
        outage_on = outage_off = False
        while True:
            now = time.monotonic() - t0
            if now >= seconds:
                break
            if now >= next_sample:
                samples.append((round(now, 1), common.rss_kib(pid)))
                next_sample += SAMPLE_EVERY_S
            if not outage_on and now >= outage[0]:
                idp.control("fault", {"mode": "500"})
                outage_on = True
                events.append((round(now, 2), "outage start"))
            if outage_on and not outage_off and now >= outage[1]:
                idp.control("fault", {"mode": "none"})
                outage_off = True
                events.append((round(now, 2), "outage end"))
            if now >= next_rotation:
                kids = idp.control("rotate", {})["kids"]
                rotations.append(time.monotonic() - t0)
                pool = mint_pool(f"{len(rotations)}")
                new = Wrk(f"soak-{len(rotations)}", work, stack.envoy_url, seconds + 60,
                          token_file=pool, rate=rate)
                switches.append(time.monotonic() - t0)
                if current is not None:
                    segments.append(current.finish(interrupt=True))
                current = new
                events.append((round(rotations[-1], 2), f"rotate: kids {kids}; pool switched at "
                                                        f"{switches[-1]:.2f}"))
                next_rotation += ROTATE_EVERY_S
            if not envoy_proc.alive:
                problems.append("Envoy exited during the soak")
                break
            time.sleep(0.1)  # every event above is due within a tenth of a second
        end = time.monotonic() - t0
        if current is not None:
            segments.append(current.finish(interrupt=True))
        samples.append((round(time.monotonic() - t0, 1), common.rss_kib(pid)))
        if outage_on and not outage_off:
            idp.control("fault", {"mode": "none"})
        harness.wait_until(lambda: envoy.upstream_idle("okta_idp"), 10,
                           "the filter's key fetches to finish")
        counts = idp.counts()
        jwks_after = envoy.stats(JWKS_STATS)
        vms_after = envoy.stats(VM_CREATED)
        end_status = envoy.get(PATH, idp.mint()).status
        time.sleep(0.3)
        failures = common.vm_failures(envoy_proc)
    finally:
        alive = envoy_proc.alive
        stack.stop()

    # 3. the checks
    requests = sum(int(s["requests"]) for s in segments)
    active = sum((s.get("active_us") or s["duration_us"]) / 1e6 for s in segments)
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    for s in segments:
        for k, v in s["statuses"].items():
            statuses[k] = statuses.get(k, 0) + int(v)
        for k, v in s["errors"].items():
            errors[k] = errors.get(k, 0) + int(v)
    bad = sum(non_2xx(s) for s in segments)
    achieved = requests / max(end, 1e-9)
    if bad:
        problems.append(f"{bad} non-2xx answers or socket errors for valid tokens: "
                        f"{statuses} {errors}")
    if requests == 0:
        problems.append("no request completed")
    if achieved < 0.9 * rate:
        problems.append(f"achieved {achieved:,.0f} rps of the {rate:,.0f} asked (the machine "
                        "is too busy for the rate to mean anything)")

    warm = [s for s in samples if s[0] >= 0.2 * seconds]
    base = warm[0][1] if warm else samples[0][1]
    top = max(k for _, k in warm) if warm else base
    rss_ok = top <= base + margin_mib * 1024
    if not rss_ok:
        problems.append(f"RSS grew: max {top / 1024:.1f} MiB over the last 80% > "
                        f"{base / 1024:.1f} MiB + {margin_mib:g} MiB")

    delta = {k.split("okta_jwt_jwks_")[1].rsplit("_okta", 1)[0]:
             jwks_after.get(k, 0) - jwks_before.get(k, 0) for k in jwks_after if "age_s" not in k}
    idp_fetches = counts.get("GET /oauth2/default/v1/keys", 0)
    prediction = predict(end=end, rotations=rotations, switches=switches, outage=outage,
                         fresh_s=max_age, first_due=first_due)
    checks = {"fetch_success": ("success", delta.get("fetch_success", 0)),
              "fetch_failure": ("failure", delta.get("fetch_failure", 0)),
              "refetch_unknown_kid": ("unknown_kid", delta.get("refetch_unknown_kid", 0))}
    fetch_rows = []
    for stat, (key, seen) in checks.items():
        lo, hi = prediction[key]
        ok = lo - 1 <= seen <= hi + 1
        fetch_rows.append((stat, seen, f"{lo}..{hi}" if lo != hi else str(lo), ok))
        if not ok:
            problems.append(f"{stat}: {seen}, predicted {lo}..{hi} (+-1)")
    if prediction["refused_kid"][1]:
        problems.append("the simulation has unknown kids refused: the schedule is wrong")
    if idp_fetches != delta.get("fetch_success", 0) + delta.get("fetch_failure", 0):
        problems.append(f"the IdP served {idp_fetches} key fetches, the filter counts "
                        f"{delta.get('fetch_success', 0)} + {delta.get('fetch_failure', 0)}")
    if end_status != 200:
        problems.append(f"a fresh valid token got {end_status} at the end")
    if not alive:
        problems.append("Envoy was not running at the end")
    if not vms_before or vms_before != vms_after:
        problems.append(f"Wasm VMs were created during the soak: {vms_before} -> {vms_after}")
    problems += [f"Envoy log: {line[:300]}" for line in failures[:20]]

    report = {
        "seconds": round(end, 1), "peak_rps": round(peak, 1), "target_rps": round(rate, 1),
        "achieved_rps": round(achieved, 1), "requests": requests, "statuses": statuses,
        "errors": errors, "non_2xx": bad, "rss_kib": samples, "rss_base_kib": base,
        "rss_max_after_warmup_kib": top, "rss_margin_mib": margin_mib,
        "rotations_s": [round(r, 2) for r in rotations], "switches_s": [round(s, 2) for s in switches],
        "outage_s": outage, "max_age_s": max_age, "min_refetch_interval_s": MIN_REFETCH_S,
        "idp_counts": counts, "idp_key_fetches": idp_fetches, "filter_jwks": delta,
        "prediction": {k: list(v) for k, v in prediction.items()}, "events": events,
        "problems": problems, "load_at_end": common.machine_load(),
    }
    common.write_json(out / "soak.json", report)
    (out / "rss.csv").write_text("t_s,rss_kib\n" + "".join(f"{t},{k}\n" for t, k in samples))
    print_report(report, fetch_rows)
    return 1 if problems else 0


def print_report(r: dict, fetch_rows: list) -> None:
    print(f"\nsoak: {r['seconds']} s; peak {r['peak_rps']:,.0f} rps closed loop, asked "
          f"{r['target_rps']:,.0f}, achieved {r['achieved_rps']:,.0f} rps; {r['requests']} "
          f"requests, statuses {r['statuses']}, non-2xx or socket errors {r['non_2xx']}; "
          f"{r['load_at_end']}")
    print(f"rotations at {r['rotations_s']} s; JWKS outage {r['outage_s'][0]}..{r['outage_s'][1]} s")
    print("RSS (MiB) every 10 s: " + " ".join(f"{k / 1024:.1f}" for _, k in r["rss_kib"]))
    print(f"RSS from 20% on: max {r['rss_max_after_warmup_kib'] / 1024:.1f} MiB, base "
          f"{r['rss_base_kib'] / 1024:.1f} MiB, margin {r['rss_margin_mib']:g} MiB")
    print(f"{'key fetches':24} {'seen':>6} {'predicted':>10}")
    for stat, seen, predicted, ok in fetch_rows:
        print(f"{stat:24} {seen:>6} {predicted:>10} {'ok' if ok else 'FAIL'}")
    print(f"{'IdP GET /v1/keys':24} {r['idp_key_fetches']:>6}")
    for p in r["problems"]:
        print(f"  - {p}")
    print("RESULT: " + ("FAIL" if r["problems"] else "ok"))


if __name__ == "__main__":
    sys.exit(main())
