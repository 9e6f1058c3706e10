#!/usr/bin/env python3
"""`make bench`: this filter next to Envoy's native jwt_authn, in one Envoy, under wrk.

Processes, all on 127.0.0.1 with ports picked at run time, all stopped on exit:
  - the mock IdP (tests/mock-idp): it mints the tokens, and its key set is inlined into both
    filters' configurations (so no key fetch is measured);
  - the upstream: a second Envoy that answers 200 itself (envoy/bench-upstream.yaml.tmpl);
  - the Envoy under test (envoy/bench.yaml.tmpl, `--concurrency 1`) with four listeners that
    route to that upstream: `none` (no auth filter), `native` (jwt_authn + RBAC on scope
    orders:read), `wasm` (this filter, same policy, Envoy's BoringSSL through the foreign
    function) and `wasm_pure` (this filter, pure-Rust signatures). A fresh one is started for
    each workload (and round), so no per-VM state such as a token cache carries over.

Workloads, each run as `wrk -t1 -c<connections> -d<seconds>s --latency` per listener, after a
1 s warm-up with one token (tests/bench/wrk.lua builds the requests and counts the statuses):
  same     one valid token on every request, for BENCH_SECONDS;
  unique   a pool of BENCH_TOKENS distinct valid tokens, each sent once: the run ends when the
           pool is used up, or after BENCH_SECONDS (the table shows how long it lasted);
  invalid  as unique, with every 10th token invalid (half bad signature, half expired);
  pure     as unique, against wasm_pure (and native and none, for the ratios), for at most
           BENCH_PURE_SECONDS;
then `same` again on none, native and wasm, paced at half of wasm's closed-loop peak (wrk.lua
explains the pacer), in 3 x BENCH_ROUNDS short slices that take turns, each listener's latencies
pooled over its slices: the p99 latency each filter adds.

Checks: before a workload, every listener answers one request per case (valid, no token, bad
signature, expired, scope missing) as its policy requires; after every run, the statuses must
be what the workload implies (all 200; 10% 401 from the auth listeners under `invalid`), with
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

Environment (defaults, and the quick ones, in DEFAULTS): BENCH_QUICK=1 (a smoke run: 2 s runs,
3000 tokens), BENCH_SECONDS, BENCH_PURE_SECONDS, BENCH_TOKENS, BENCH_CONNECTIONS,
BENCH_WORKLOADS (a comma list), BENCH_ROUNDS (run every workload that many times, each in a
fresh Envoy, and report each listener's median run, preferring quiet ones), BENCH_PIN (1: the
Envoy under test alone on the last CPU, wrk and the upstream on the others), BENCH_IDLE_WAIT,
BENCH_MEMORY, BENCH_MEMORY_TOKENS, BENCH_MEMORY_SECONDS, BENCH_MEMORY_LIMIT_MIB,
BENCH_MEMORY_FLAT_MIB, BENCH_ENFORCE_TARGETS=1 (exit 1 when a target of issue 5 is missed, too).
OKTA_JWT_WASM, ENVOY_BIN and MOCK_IDP_BIN as for the integration tests.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))
import harness  # noqa: E402  (processes, ports, bounded waits; puts envoy/ on sys.path)
import render  # noqa: E402  (envoy/render.py)
from envoy_client import EnvoyClient  # noqa: E402
from idp_client import IdpClient, token_claims  # noqa: E402

HOST = "127.0.0.1"
ENVOY_DIR = harness.REPO / "envoy"
BENCH_TEMPLATE = ENVOY_DIR / "bench.yaml.tmpl"
BENCH_FILTER = ENVOY_DIR / "bench-filter.json.tmpl"
UPSTREAM_TEMPLATE = ENVOY_DIR / "bench-upstream.yaml.tmpl"
WRK_SCRIPT = HERE / "wrk.lua"
OUT_DIR = harness._target_dir() / "bench"
WORK_DIR = OUT_DIR / "work"
TOKENS_DIR = OUT_DIR / "tokens"
IDP_KEY_DIR = OUT_DIR / "idp-keys"
# The issuer in every token: fixed, so that minted pools outlive the IdP's (random) port. No
# one fetches anything from it: both filters get the keys inline.
IDP_PUBLIC_URL = "http://idp.bench.invalid"

PATH = "/api/orders"
LISTENERS = ("none", "native", "wasm", "wasm_pure")
# name, listeners, what
WORKLOADS = (
    ("same", ("none", "native", "wasm"), "one valid token on every request"),
    ("unique", ("none", "native", "wasm"), "distinct valid tokens, each sent once"),
    ("invalid", ("none", "native", "wasm"),
     "as unique, every 10th token invalid (half bad signature, half expired)"),
    ("pure", ("none", "native", "wasm_pure"), "as unique, with pure-Rust signature checks"),
)
INVALID_EVERY = 10
MINT_CHUNK = 2000  # tokens per /control/mint-many call: a few seconds of RSA signing
TOKEN_LIFETIME_S = 24 * 3600
TOKEN_MIN_VALIDITY_S = 3600  # a kept pool whose oldest token expires sooner is minted again
WARMUP_SECONDS = 1
BUSY_CPU = 0.10  # other processes using more than this share of a CPU make a run suspect
SATURATED_CPU = 0.90  # below this, the Envoy under test was not what limited a closed-loop run

# name: (default, quick default)
DEFAULTS: dict[str, tuple[float, float]] = {
    "BENCH_SECONDS": (10, 2),
    "BENCH_PURE_SECONDS": (5, 2),
    "BENCH_TOKENS": (30000, 3000),
    "BENCH_CONNECTIONS": (8, 8),
    "BENCH_PIN": (0, 0),
    "BENCH_IDLE_WAIT": (60, 15),
    "BENCH_ROUNDS": (3, 1),
    "BENCH_MEMORY_TOKENS": (100000, 5000),
    "BENCH_MEMORY_SECONDS": (300, 10),
    "BENCH_MEMORY_LIMIT_MIB": (64, 64),
    "BENCH_MEMORY_FLAT_MIB": (8, 8),
}

# Issue 5: (what, workload, listener, minimum requests/s relative to native)
RATIO_TARGETS = (
    ("same token", "same", "wasm", 1.3),
    ("unique tokens", "unique", "wasm", 0.8),
    ("pure-Rust fallback, unique tokens", "pure", "wasm_pure", 0.25),
)
ADDED_P99_TARGET_US = 100


class BenchError(harness.HarnessError):
    pass


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- settings ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    quick: bool
    seconds: int
    pure_seconds: int
    tokens: int
    connections: int
    workloads: tuple[str, ...]
    pin: bool
    idle_wait: int
    rounds: int
    memory: bool
    memory_tokens: int
    memory_seconds: int
    memory_limit_mib: float
    memory_flat_mib: float
    enforce_targets: bool

    @classmethod
    def from_env(cls) -> Settings:
        quick = _flag("BENCH_QUICK")

        def number(name: str, minimum: float = 1) -> float:
            raw = os.environ.get(name, "").strip()
            try:
                value = float(raw) if raw else DEFAULTS[name][quick]
            except ValueError:
                raise BenchError(f"{name}={raw!r} is not a number") from None
            if value < minimum:
                raise BenchError(f"{name}={raw!r}: must be at least {minimum}")
            return value

        known = [name for name, _, _ in WORKLOADS]
        raw = os.environ.get("BENCH_WORKLOADS", "")
        workloads = tuple(w.strip() for w in raw.split(",") if w.strip()) or tuple(known)
        if unknown := [w for w in workloads if w not in known]:
            raise BenchError(f"BENCH_WORKLOADS: no workload {', '.join(unknown)} "
                             f"(there are {', '.join(known)})")
        return cls(
            quick=quick, seconds=int(number("BENCH_SECONDS")),
            pure_seconds=int(number("BENCH_PURE_SECONDS")),
            tokens=int(number("BENCH_TOKENS", INVALID_EVERY)),
            connections=int(number("BENCH_CONNECTIONS")), workloads=workloads,
            pin=bool(number("BENCH_PIN", 0)) and len(os.sched_getaffinity(0)) >= 2,
            idle_wait=int(number("BENCH_IDLE_WAIT", 0)), rounds=int(number("BENCH_ROUNDS")),
            memory=_flag("BENCH_MEMORY"), memory_tokens=int(number("BENCH_MEMORY_TOKENS")),
            memory_seconds=int(number("BENCH_MEMORY_SECONDS")),
            memory_limit_mib=number("BENCH_MEMORY_LIMIT_MIB"),
            memory_flat_mib=number("BENCH_MEMORY_FLAT_MIB"),
            enforce_targets=_flag("BENCH_ENFORCE_TARGETS"),
        )

    def cpus(self, under_test: bool) -> list[str]:
        """A `taskset` prefix: the Envoy under test on the last CPU, the rest elsewhere."""
        if not self.pin:
            return []
        cpus = sorted(os.sched_getaffinity(0))
        return ["taskset", "-c", ",".join(map(str, cpus[-1:] if under_test else cpus[:-1]))]


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


# --- processes --------------------------------------------------------------------------

@dataclass
class Envoy:
    proc: harness.Process
    admin_url: str
    ports: dict[str, int]

    def url(self, listener: str) -> str:
        return f"http://{HOST}:{self.ports[listener]}"

    @property
    def pid(self) -> int:
        return self.proc.popen.pid  # taskset execs Envoy: same pid

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise BenchError(f"no VmRSS in /proc/{self.pid}/status ({self.proc.name})")


def start_envoy(name: str, listeners: tuple[str, ...], write_config: Callable[[Path, dict], None],
                prefix: list[str], attempts: int = 3) -> Envoy:
    """Start an Envoy (one worker) whose bootstrap `write_config(path, ports)` writes. Ports
    (ADMIN_PORT and one per listener) are picked here, and again if another process took one."""
    for attempt in range(1, attempts + 1):
        ports = {"ADMIN_PORT": harness.free_port(), **{n: harness.free_port() for n in listeners}}
        config = WORK_DIR / f"{name}.yaml"
        write_config(config, ports)
        proc = harness.Process(name, [*prefix, harness.envoy_bin(), "-c", config,
                                      "--disable-hot-restart", "--concurrency", "1",
                                      "--log-level", "warning"], WORK_DIR)
        admin_url = f"http://{HOST}:{ports['ADMIN_PORT']}"
        try:
            # /ready answers 200 once every static listener is bound.
            harness.wait_envoy_ready(proc, admin_url, ports[listeners[0]])
            return Envoy(proc, admin_url, ports)
        except harness.HarnessError as e:
            proc.stop()
            if "Address already in use" not in proc.output() or attempt == attempts:
                raise BenchError(f"{e}\n{proc.tail()}") from None
    raise AssertionError("unreachable")


def start_upstream(settings: Settings) -> Envoy:
    def write(path: Path, ports: dict) -> None:
        variables = {"BIND_ADDRESS": HOST, "ADMIN_PORT": str(ports["ADMIN_PORT"]),
                     "LISTEN_PORT": str(ports["upstream"])}
        path.write_text(render.substitute(UPSTREAM_TEMPLATE.read_text(), variables,
                                          str(UPSTREAM_TEMPLATE)))

    return start_envoy("envoy-upstream", ("upstream",), write, settings.cpus(under_test=False))


def compact(value: dict) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass
class Context:
    """What every step needs: settings, the long-lived processes, the failures so far."""
    settings: Settings
    idp: IdpClient
    issuer: str
    jwks: dict
    upstream: Envoy
    failures: list[str] = field(default_factory=list)  # the runs measured the wrong thing
    warnings: list[str] = field(default_factory=list)  # the runs are less telling than hoped

    def start_bench_envoy(self, name: str) -> Envoy:
        def write(path: Path, ports: dict) -> None:
            variables = {
                "BIND_ADDRESS": HOST, "ADMIN_PORT": str(ports["ADMIN_PORT"]),
                **{f"PORT_{n.upper()}": str(ports[n]) for n in LISTENERS},
                "UPSTREAM_HOST": HOST, "UPSTREAM_PORT": str(self.upstream.ports["upstream"]),
                "WASM_PATH": str(harness.wasm_path()), "ISSUER": self.issuer,
                "JWKS": compact(self.jwks), "JWKS_STRING": json.dumps(compact(self.jwks)),
            }
            wasm = render.load_filter_config(variables, BENCH_FILTER)
            pure = {**wasm, "signature_backend": "pure"}
            variables["FILTER_CONFIG_PURE"] = json.dumps(compact(pure))  # as render does
            render.render(path, variables, filter_config=wasm, filter_config_path=BENCH_FILTER,
                          template=BENCH_TEMPLATE)

        return start_envoy(name, LISTENERS, write, self.settings.cpus(under_test=True))

    def client(self, envoy: Envoy, listener: str = "none") -> EnvoyClient:
        return EnvoyClient(envoy.url(listener), envoy.admin_url)


# --- tokens -----------------------------------------------------------------------------

@dataclass
class Tokens:
    valid: str  # also the warm-up and `same` token
    no_scope: str
    bad_signature: str
    expired: str
    pool: Path  # distinct valid tokens, one a line
    pool_size: int
    mixed: Path | None = None  # the pool with every INVALID_EVERY-th token invalid
    mixed_size: int = 0
    invalid_share: float = 0.0


class TokenStore:
    """Minted tokens, kept in target/bench/tokens/ for the next runs: RS256 signing in the mock
    IdP takes about 2 ms per token and core, and the IdP keeps its keys (--key-dir) and issuer
    (--public-url), so a pool stays valid until its oldest token is near its `exp`."""

    def __init__(self, idp: IdpClient, kid: str):
        self.idp, self.kid = idp, kid
        TOKENS_DIR.mkdir(parents=True, exist_ok=True)
        for stale in TOKENS_DIR.glob("*.txt"):  # pools signed by keys that are gone
            if not stale.name.startswith(f"{kid}-"):
                stale.unlink()

    def get(self, kind: str, count: int, **fields) -> list[str]:
        """`count` distinct tokens minted with `fields` (/control/mint-many), under `kind`."""
        path = TOKENS_DIR / f"{self.kid}-{kind}.txt"
        tokens = path.read_text().split() if path.exists() else []
        if tokens and fields.get("lifetime_s", 0) >= 0 and (
                token_claims(tokens[0])["exp"] < time.time() + TOKEN_MIN_VALIDITY_S):
            tokens = []
        if len(tokens) < count:
            started, missing = time.monotonic(), count - len(tokens)
            for _ in range(0, missing, MINT_CHUNK):
                body = {"count": min(MINT_CHUNK, count - len(tokens)),
                        "lifetime_s": TOKEN_LIFETIME_S, **fields}
                tokens += self.idp.control("mint-many", body)["tokens"]
                log(f"minted {len(tokens)}/{count} {kind} tokens "
                    f"({time.monotonic() - started:.0f} s; kept in {TOKENS_DIR} for next time)")
            write_lines(path, tokens)
        tokens = tokens[:count]
        if len(set(tokens)) != count:
            raise BenchError(f"{path}: {len(set(tokens))} distinct tokens, not {count}")
        return tokens


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def make_tokens(store: TokenStore, count: int, with_invalid: bool) -> Tokens:
    """The pre-flight tokens and a pool of `count` valid ones; with `with_invalid`, also the
    pool mixed with 1 invalid token (bad signature and expired, in turn) every INVALID_EVERY."""
    idp = store.idp
    valid = store.get("valid", count)
    tokens = Tokens(
        valid=idp.mint(lifetime_s=TOKEN_LIFETIME_S),
        no_scope=idp.mint({"scp": ["profile"]}, lifetime_s=TOKEN_LIFETIME_S),
        bad_signature=idp.mint(signing_key="rogue", lifetime_s=TOKEN_LIFETIME_S),
        expired=idp.mint(lifetime_s=-3600),
        pool=write_lines(WORK_DIR / "tokens-valid.txt", valid), pool_size=count)
    if with_invalid:
        n = count // (INVALID_EVERY - 1)
        rogue = store.get("bad-signature", n - n // 2, signing_key="rogue")
        expired = store.get("expired", n // 2, lifetime_s=-3600)
        invalid = [t for pair in itertools.zip_longest(rogue, expired) for t in pair if t]
        mixed = []
        for i, bad in enumerate(invalid):
            mixed += valid[i * (INVALID_EVERY - 1):(i + 1) * (INVALID_EVERY - 1)] + [bad]
        tokens.mixed = write_lines(WORK_DIR / "tokens-mixed.txt", mixed)
        tokens.mixed_size, tokens.invalid_share = len(mixed), len(invalid) / len(mixed)
    return tokens


# --- checks -----------------------------------------------------------------------------

def preflight(ctx: Context, envoy: Envoy, tokens: Tokens) -> None:
    """One request per case and listener; a listener that answers otherwise is misconfigured."""
    cases = [("valid token", tokens.valid, 200), ("no token", None, 401),
             ("bad signature", tokens.bad_signature, 401), ("expired", tokens.expired, 401),
             ("scope orders:read missing", tokens.no_scope, 403)]
    wrong = []
    for listener in LISTENERS:
        client = ctx.client(envoy, listener)
        for case, token, status in cases:
            expected = 200 if listener == "none" else status
            got = client.get(PATH, token).status
            if got != expected:
                wrong.append(f"{listener}: {case}: expected {expected}, got {got}")
    if wrong:
        raise BenchError("listeners answer wrongly (misconfigured?):\n  " + "\n  ".join(wrong)
                         + f"\n{envoy.proc.tail()}")


# --- measuring --------------------------------------------------------------------------

class CpuMeter:
    """CPU time used from construction to `stop()`: by each named process, by wrk (children of
    this interpreter reaped meanwhile), and by every other process on the machine (`others`).
    A closed-loop run measures the Envoy under test only if that Envoy is nearly always busy;
    its CPU time per request is a measure of its cost that holds even when it is not."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.started = time.monotonic()
        self.start = self._sample()
        self.seconds: dict[str, float] = {}  # CPU seconds, set by stop()
        self.elapsed = 0.0

    def _sample(self) -> dict[str, float]:
        tick = os.sysconf("SC_CLK_TCK")
        # user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
        machine = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        t = os.times()
        sample = {"machine": (sum(machine) - machine[3] - machine[4]) / tick,
                  "wrk": t.children_user + t.children_system, "self": t.user + t.system}
        for name, pid in self.pids.items():
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            sample[name] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        return sample

    def stop(self) -> CpuMeter:
        self.elapsed = time.monotonic() - self.started
        used = {k: v - self.start[k] for k, v in self._sample().items()}
        machine = used.pop("machine")
        used["others"] = max(0.0, machine - sum(used.values()))
        del used["self"]
        self.seconds = used
        return self

    def shares(self, seconds: float | None = None) -> dict[str, float]:
        """CPUs kept busy on average over `seconds` (default: the time measured), per name."""
        return {k: round(v / (seconds or self.elapsed), 3) for k, v in self.seconds.items()}


def wait_for_idle(ctx: Context, pids: dict[str, int]) -> None:
    """Wait, at most BENCH_IDLE_WAIT s, until other processes leave the CPUs alone: on a shared
    machine, a run during someone else's build measures that build."""
    deadline = time.monotonic() + ctx.settings.idle_wait
    for waited in itertools.count():
        meter = CpuMeter(pids)
        time.sleep(1.0)
        others = meter.stop().shares()["others"]
        if others <= BUSY_CPU or time.monotonic() >= deadline:
            if waited:
                log(f"  waited {waited} s for other processes to calm down (now {others:.0%})")
            return
        if not waited:
            log(f"  other processes keep {others:.0%} of a CPU busy: waiting for that to end "
                f"(at most {ctx.settings.idle_wait} s, BENCH_IDLE_WAIT)")


def wrk(ctx: Context, name: str, url: str, seconds: int, *, token: str | None = None,
        token_file: Path | None = None, rate: float = 0, one_pass: bool = False,
        while_running: Callable[[], None] = lambda: None) -> dict:
    """Run wrk with wrk.lua against `url`; returns what its done() wrote. `while_running` is
    called about once a second until wrk exits."""
    result, passed = WORK_DIR / f"wrk-{name}.json", WORK_DIR / f"wrk-{name}.passed"
    result.unlink(missing_ok=True)
    passed.unlink(missing_ok=True)
    env = {"BENCH_PATH": PATH, "BENCH_TOKEN": token or "",
           "BENCH_TOKEN_FILE": str(token_file or ""),
           "BENCH_ONE_PASS": str(passed) if one_pass else "",
           "BENCH_RATE": f"{rate:.1f}" if rate else "", "BENCH_RESULT_FILE": str(result),
           "BENCH_QUANTILES": "1" if rate else ""}
    proc = harness.Process(f"wrk-{name}", [
        *ctx.settings.cpus(under_test=False), "wrk", "-t1", f"-c{ctx.settings.connections}",
        f"-d{seconds}s", "--timeout", "5s", "--latency", "-s", WRK_SCRIPT, url + PATH],
        WORK_DIR, env=env)
    deadline = time.monotonic() + seconds + 60  # reading a large token file takes a while
    next_call = 0.0
    try:
        while time.monotonic() < deadline:
            if time.monotonic() >= next_call:
                while_running()
                next_call = time.monotonic() + 1.0
            if passed.exists():
                proc.popen.send_signal(signal.SIGINT)  # wrk stops, then reports as usual
            try:
                proc.popen.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        proc.stop()
    if proc.popen.returncode != 0 or not result.exists():
        raise BenchError(f"wrk {name} failed (status {proc.popen.returncode})\n{proc.tail()}")
    return json.loads(result.read_text())


STATS_FILTER = r"okta_jwt|jwt_authn\.|rbac\.|^http\.[a-z_]+\.downstream_rq_[1-5]xx$"


@dataclass
class Run:
    workload: str
    listener: str
    seconds: float
    requests: int
    rps: float
    p50_us: float
    p99_us: float
    statuses: dict[str, int]
    errors: dict[str, int]
    latency_us: dict[str, float]
    rss_after_kib: int
    cpu: dict[str, float]  # CPUs kept busy on average: envoy, upstream, wrk, others
    envoy_cpu_us: float  # CPU time of the Envoy under test per request
    stats: dict[str, int]  # Envoy counters that moved during the run
    target_rps: float | None = None
    rps_rounds: list[float] = field(default_factory=list)
    # Paced runs only: evenly spaced latency quantiles (us), to pool interleaved runs.
    quantiles: list[float] = field(default_factory=list, repr=False)


def measure(ctx: Context, envoy: Envoy, workload: str, listener: str, seconds: int,
            tokens: Tokens, *, token_file: Path | None = None, rate: float = 0,
            round_: int = 1) -> Run:
    """One wrk run after a warm-up. With a token file, every token is sent at most once: the
    run ends when they are used up, or after `seconds`."""
    url, client = envoy.url(listener), ctx.client(envoy)
    label = f"{workload}-{listener}-{round_}" + ("-paced" if rate else "")
    pids = {"envoy": envoy.pid, "upstream": ctx.upstream.pid}
    wait_for_idle(ctx, pids)
    wrk(ctx, f"{label}-warmup", url, WARMUP_SECONDS, token=tokens.valid)
    before = client.stats(STATS_FILTER)
    log(f"{workload}: {listener}" + (f" paced at {rate:,.0f} rps" if rate else "")
        + f" for {seconds} s")
    cpu = CpuMeter(pids)
    r = wrk(ctx, label, url, seconds, token=None if token_file else tokens.valid,
            token_file=token_file, one_pass=token_file is not None, rate=rate)
    cpu.stop()
    after = client.stats(STATS_FILTER)
    duration = (r.get("active_us") or r["duration_us"]) / 1e6
    run = Run(workload=workload, listener=listener, seconds=round(duration, 3),
              requests=int(r["requests"]), rps=round(r["requests"] / duration, 1),
              p50_us=r["latency_us"]["p50"], p99_us=r["latency_us"]["p99"],
              statuses={str(k): int(v) for k, v in sorted(r["statuses"].items())},
              errors={k: int(v) for k, v in r["errors"].items()}, latency_us=r["latency_us"],
              rss_after_kib=envoy.rss_kib(), cpu=cpu.shares(duration),
              envoy_cpu_us=round(cpu.seconds["envoy"] * 1e6 / max(1, r["requests"]), 1),
              stats={k: v - before.get(k, 0) for k, v in sorted(after.items())
                     if v != before.get(k, 0)},
              target_rps=rate or None, quantiles=[float(q) for q in r.get("quantiles") or []])
    log(f"  {run.rps:,.0f} rps, p50 {run.p50_us:.0f} us, p99 {run.p99_us:.0f} us, "
        f"Envoy {run.envoy_cpu_us:.0f} us CPU per request, statuses {run.statuses}, "
        f"CPUs busy: {cpu_text(run.cpu)}")
    return run


def pooled_percentile(runs: list[Run], p: float) -> float:
    """The p-th percentile of several runs' latencies together: each run's quantiles stand for
    equal shares of its requests."""
    points = sorted((q, r.requests / len(r.quantiles)) for r in runs for q in r.quantiles)
    total, seen = sum(w for _, w in points), 0.0
    for value, weight in points:
        seen += weight
        if seen >= p / 100 * total:
            return value
    return 0.0


def check(ctx: Context, run: Run, expected_401_share: float = 0.0) -> None:
    """Record in ctx what is wrong with a run's outcome."""
    problems = []
    errors = {k: v for k, v in run.errors.items() if k != "status" and v}
    if errors:
        problems.append(f"socket errors {errors}")
    if run.requests == 0:
        problems.append("no request completed")
    else:
        if others := {s: n for s, n in run.statuses.items() if s not in ("200", "401")}:
            problems.append(f"unexpected statuses {others}")
        share = run.statuses.get("401", 0) / run.requests
        # Exact but for the requests still in flight when wrk stops.
        if abs(share - expected_401_share) > 0.005 + ctx.settings.connections / run.requests:
            problems.append(f"{share:.2%} answered 401, expected {expected_401_share:.2%}")
    ctx.failures += [f"{run.workload}/{run.listener}: {p}" for p in problems]
    if run.target_rps and run.rps < 0.95 * run.target_rps:
        ctx.warnings.append(f"{run.workload}/{run.listener}: reached {run.rps:,.0f} of the "
                            f"{run.target_rps:,.0f} rps asked")


# --- the benchmark ----------------------------------------------------------------------

@dataclass
class WorkloadResult:
    name: str
    what: str
    pool_size: int
    rss_kib: list[list[int]] = field(default_factory=list)  # per round: idle, after
    runs: list[Run] = field(default_factory=list)
    # Per listener, its rps over native's in each round (runs seconds apart in one Envoy).
    x_native_rounds: dict[str, list[float]] = field(default_factory=dict)

    def x_native(self, listener: str) -> float | None:
        """The median of the per-round ratios: a paired comparison, so drift of the machine
        between rounds cancels out."""
        ratios = sorted(self.x_native_rounds.get(listener, []))
        return ratios[len(ratios) // 2] if ratios else None


def run_workloads(ctx: Context, tokens: Tokens) -> tuple[list[WorkloadResult], dict]:
    """Each workload in its own Envoy (a fresh one per round), listener after listener; with
    several rounds, each listener's run with the median rps stands for it, and its ratio to
    native is the median of the rounds' ratios."""
    results, latency = [], {}
    for name, listeners, what in WORKLOADS:
        if name not in ctx.settings.workloads:
            continue
        seconds = ctx.settings.pure_seconds if name == "pure" else ctx.settings.seconds
        token_file = {"same": None, "invalid": tokens.mixed}.get(name, tokens.pool)
        pool_size = {"same": 1, "invalid": tokens.mixed_size}.get(name, tokens.pool_size)
        result = WorkloadResult(name, what, pool_size)
        rounds: dict[str, list[Run]] = {listener: [] for listener in listeners}
        for round_ in range(1, ctx.settings.rounds + 1):
            envoy = ctx.start_bench_envoy(f"envoy-{name}-{round_}")
            try:
                result.rss_kib.append([envoy.rss_kib()])
                preflight(ctx, envoy, tokens)
                for listener in listeners:
                    run = measure(ctx, envoy, name, listener, seconds, tokens,
                                  token_file=token_file, round_=round_)
                    auth = name == "invalid" and listener != "none"
                    check(ctx, run, tokens.invalid_share if auth else 0.0)
                    rounds[listener].append(run)
                result.runs = [median(runs) for runs in rounds.values()]
                if "native" in rounds and rounds["native"][-1].rps:
                    for listener, runs in rounds.items():
                        result.x_native_rounds.setdefault(listener, []).append(
                            round(runs[-1].rps / rounds["native"][-1].rps, 3))
                if name == "same" and round_ == ctx.settings.rounds:
                    latency = added_latency(ctx, envoy, tokens, result.runs)
                result.rss_kib[-1].append(envoy.rss_kib())
            finally:
                envoy.proc.stop()
        results.append(result)
    return results, latency


def median(runs: list[Run]) -> Run:
    """The run with the median rps (the upper one of an even count) among those that other
    processes left alone (among all if none was), with every round's rps."""
    quiet = [r for r in runs if r.cpu["others"] <= BUSY_CPU] or runs
    run = sorted(quiet, key=lambda r: r.rps)[len(quiet) // 2]
    run.rps_rounds = [r.rps for r in runs]
    return run


def added_latency(ctx: Context, envoy: Envoy, tokens: Tokens, same: list[Run]) -> dict:
    """The same token, paced at half of wasm's closed-loop peak: the p99 each filter adds.

    On a shared machine a single disturbance moves one run's p99 by milliseconds, so the
    listeners take turns in short slices (none, native, wasm, none, ...; 3 x BENCH_ROUNDS
    slices each), and each listener's p50 and p99 come from all its slices' latencies pooled:
    whatever disturbs the machine is spread over the three alike."""
    rate = next(r.rps for r in same if r.listener == "wasm") / 2
    slices = 3 * ctx.settings.rounds
    seconds = max(2, ctx.settings.seconds // 3)
    runs: dict[str, list[Run]] = {listener: [] for listener in ("none", "native", "wasm")}
    for i in range(1, slices + 1):
        for listener, done in runs.items():
            run = measure(ctx, envoy, "same-paced", listener, seconds, tokens, rate=rate,
                          round_=i)
            check(ctx, run)
            if not run.quantiles:
                raise BenchError(f"wrk gave no latency quantiles for same-paced/{listener}")
            done.append(run)
    pooled = [pool(done) for done in runs.values()]
    none = pooled[0]
    return {"rate": round(rate, 1), "slices": slices, "slice_seconds": seconds, "runs": pooled,
            "added_p99_us": {r.listener: round(r.p99_us - none.p99_us, 1) for r in pooled[1:]},
            "added_p99_slices_us": {
                listener: [round(r.p99_us - n.p99_us, 1) for r, n in zip(done, runs["none"])]
                for listener, done in list(runs.items())[1:]}}


def pool(runs: list[Run]) -> Run:
    """One listener's interleaved slices as one run: latencies pooled, rates and CPU averaged
    by request."""
    requests = sum(r.requests for r in runs)
    seconds = sum(r.seconds for r in runs)
    statuses: dict[str, int] = {}
    for r in runs:
        for status, count in r.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    return replace(
        runs[0], seconds=round(seconds, 3), requests=requests,
        rps=round(requests / seconds, 1) if seconds else 0.0,
        p50_us=pooled_percentile(runs, 50), p99_us=pooled_percentile(runs, 99),
        statuses=statuses,
        envoy_cpu_us=round(sum(r.envoy_cpu_us * r.requests for r in runs) / max(1, requests), 1),
        cpu={k: round(sum(r.cpu[k] for r in runs) / len(runs), 3) for k in runs[0].cpu},
        latency_us={f"p{p}".replace(".", ""): pooled_percentile(runs, p)
                    for p in (50, 90, 99, 99.9)},
        quantiles=[], rps_rounds=[r.rps for r in runs])


def memory_check(ctx: Context, store: TokenStore) -> dict:
    s = ctx.settings
    tokens = make_tokens(store, s.memory_tokens, with_invalid=False)
    envoy = ctx.start_bench_envoy("envoy-memory")
    samples: list[tuple[float, int]] = []
    try:
        idle = envoy.rss_kib()
        preflight(ctx, envoy, tokens)
        url = envoy.url("wasm")
        log(f"memory: {s.memory_tokens} distinct tokens to wasm, each once")
        one_pass = wrk(ctx, "memory-one-pass", url, max(60, s.memory_tokens // 200),
                       token_file=tokens.pool, one_pass=True)
        after_pass = envoy.rss_kib()
        started = time.monotonic()

        def sample() -> None:
            samples.append((round(time.monotonic() - started, 1), envoy.rss_kib()))

        log(f"memory: the same tokens in turn for {s.memory_seconds} s")
        sustained = wrk(ctx, "memory-sustained", url, s.memory_seconds, token_file=tokens.pool,
                        while_running=sample)
        sample()
    finally:
        envoy.proc.stop()
    # Flatness is judged after the first tenth, which may still be warming up.
    settled = [kib for _, kib in samples][len(samples) // 10:]
    peak = max([after_pass, *settled])
    m = {"tokens": s.memory_tokens, "seconds": s.memory_seconds, "rss_idle_kib": idle,
         "rss_after_one_pass_kib": after_pass, "rss_peak_kib": peak,
         "growth_mib": round((peak - idle) / 1024, 1),
         "drift_mib": round((max(settled) - min(settled)) / 1024, 1),
         "limit_mib": s.memory_limit_mib, "flat_mib": s.memory_flat_mib,
         "one_pass": one_pass, "sustained": sustained, "samples": samples}
    if one_pass["sent"] < s.memory_tokens:
        ctx.failures.append(f"memory: only {one_pass['sent']} of {s.memory_tokens} tokens sent")
    for name, r in (("one pass", one_pass), ("sustained", sustained)):
        if set(r["statuses"]) != {"200"} or any(v for k, v in r["errors"].items()):
            ctx.failures.append(f"memory, {name}: statuses {r['statuses']}, errors {r['errors']}")
    return m


# --- reporting --------------------------------------------------------------------------

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
    for what, workload, listener, minimum in RATIO_TARGETS:
        w = by_name.get(workload)
        measured = w and w.x_native(listener)
        if measured:
            rounds = w.x_native_rounds[listener]
            per_round = (f", median of rounds {', '.join(f'{r:.2f}' for r in rounds)}"
                         if len(rounds) > 1 else "")
            targets.append({"what": f"{what}: {listener} / native",
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
    notes = []
    for r in runs:
        hits = sum(v for k, v in r.stats.items() if "okta_jwt" in k and "cache_hit" in k)
        misses = sum(v for k, v in r.stats.items() if "okta_jwt" in k and "cache_miss" in k)
        if hits + misses:
            notes.append(f"{r.listener}: token cache hit {hits / (hits + misses):.0%}")
    return f" ({', '.join(notes)})" if notes else ""


def cpu_text(cpu: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:.0%}" for name, share in cpu.items())


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
            native, none = base.get("native"), base.get("none")
            spread = ([f"{min(r.rps_rounds):,.0f}-{max(r.rps_rounds):,.0f}"]
                      if rounds > 1 else [])
            x_native = w.x_native(r.listener)
            rows.append([w.name, r.listener, f"{r.seconds:.1f}", f"{r.rps:,.0f}", *spread,
                         f"{x_native:.2f}" if x_native else ratio(r.rps, native and native.rps),
                         ratio(r.rps, none and none.rps),
                         f"{r.p50_us:,.0f}", f"{r.p99_us:,.0f}", f"{r.envoy_cpu_us:.0f}",
                         ratio(r.envoy_cpu_us, native and native.envoy_cpu_us),
                         " ".join(f"{s}:{n}" for s, n in r.statuses.items()),
                         mib(r.rss_after_kib), cpu_cell(r)])
    header = ["workload", "listener", "secs", "rps",
              *([f"rps in {rounds} rounds"] if rounds > 1 else []),
              "x native", "x none", "p50 us", "p99 us", "CPU us/req", "cost x native", "statuses",
              "RSS MiB", CPU_HEADER]
    out = [table(header, rows)]
    out.append("\nEnvoy RSS (MiB), idle -> after the workload: " + "; ".join(
        f"{w.name} " + ", ".join(f"{mib(idle)} -> {mib(after)}" for idle, after in w.rss_kib)
        for w in workloads))
    for w in workloads:
        if w.pool_size > 1:
            used = ", ".join(f"{r.listener} {r.requests / w.pool_size:.0%}" for r in w.runs)
            out.append(f"{w.name}: {w.pool_size} distinct tokens, each sent at most once; share "
                       f"used: {used}{token_cache_note(w.runs)}")
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
                   f"per listener, latencies pooled; p99 added slice by slice: wasm "
                   f"{median_range(slices['wasm'])}, native {median_range(slices['native'])})")
    targets = target_results(workloads, latency)
    out.append("\nIssue 5 targets (requests/s over native's in the same Envoy, median of the rounds):")
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
        "\nIssue 5 targets:", targets_text(targets)])
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


# --- main -------------------------------------------------------------------------------

def main() -> int:
    # A plain SIGTERM would skip atexit, which stops every child (harness._stop_everything).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        settings = Settings.from_env()
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
