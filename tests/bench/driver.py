"""The bench's machinery: settings, the Envoys and the upstream, wrk, CPU accounting, and one
measured run (tests/bench/bench.py describes the whole)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))
import harness  # noqa: E402  (processes, ports, bounded waits; puts envoy/ on sys.path)
import render  # noqa: E402  (envoy/render.py)
from envoy_client import EnvoyClient  # noqa: E402
from idp_client import IdpClient  # noqa: E402

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
LISTENERS = ("none", "native", "native_cached", "floor", "wasm", "wasm_pure", "wasm_alt")
# Where `make bench` builds the bench's own proxy-wasm crates (benches/*, each its own
# workspace): `floor` here, `unitcost` for tests/bench/unitcost.py.
BENCH_CRATES_DIR = harness._target_dir() / "bench-crates" / "wasm32-wasip1" / "release"
WARMUP_SECONDS = 1
BUSY_CPU = 0.10  # other processes using more than this share of a CPU make a run suspect

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
    wasm_alt: str | None  # BENCH_WASM_ALT: another build of the filter, measured as wasm_alt

    @classmethod
    def from_env(cls, known: Sequence[str], min_tokens: int) -> Settings:
        """From the BENCH_* variables; `known` are the workloads BENCH_WORKLOADS may name,
        `min_tokens` the least BENCH_TOKENS may be."""
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

        raw = os.environ.get("BENCH_WORKLOADS", "")
        workloads = tuple(w.strip() for w in raw.split(",") if w.strip()) or tuple(known)
        if unknown := [w for w in workloads if w not in known]:
            raise BenchError(f"BENCH_WORKLOADS: no workload {', '.join(unknown)} "
                             f"(there are {', '.join(known)})")
        return cls(
            quick=quick, seconds=int(number("BENCH_SECONDS")),
            pure_seconds=int(number("BENCH_PURE_SECONDS")),
            tokens=int(number("BENCH_TOKENS", min_tokens)),
            connections=int(number("BENCH_CONNECTIONS")), workloads=workloads,
            pin=bool(number("BENCH_PIN", 0)) and len(os.sched_getaffinity(0)) >= 2,
            idle_wait=int(number("BENCH_IDLE_WAIT", 0)), rounds=int(number("BENCH_ROUNDS")),
            memory=_flag("BENCH_MEMORY"), memory_tokens=int(number("BENCH_MEMORY_TOKENS")),
            memory_seconds=int(number("BENCH_MEMORY_SECONDS")),
            memory_limit_mib=number("BENCH_MEMORY_LIMIT_MIB"),
            memory_flat_mib=number("BENCH_MEMORY_FLAT_MIB"),
            enforce_targets=_flag("BENCH_ENFORCE_TARGETS"),
            wasm_alt=_wasm_alt(),
        )

    def cpus(self, under_test: bool) -> list[str]:
        """A `taskset` prefix: the Envoy under test on the last CPU, the rest elsewhere."""
        if not self.pin:
            return []
        cpus = sorted(os.sched_getaffinity(0))
        return ["taskset", "-c", ",".join(map(str, cpus[-1:] if under_test else cpus[:-1]))]


def _wasm_alt() -> str | None:
    raw = os.environ.get("BENCH_WASM_ALT", "").strip()
    if not raw:
        return None
    path = Path(raw).resolve()
    if not path.is_file():
        raise BenchError(f"BENCH_WASM_ALT={raw!r}: no such file")
    return str(path)


def floor_wasm() -> Path:
    """benches/floor's module (FLOOR_WASM overrides), built by `make bench`."""
    return harness._artifact("FLOOR_WASM", BENCH_CRATES_DIR / "bench_floor.wasm", "bench")


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
                prefix: list[str], extra_args: Sequence[str] = ()) -> Envoy:
    """Start an Envoy (one worker) whose bootstrap `write_config(path, ports)` writes. Ports
    (ADMIN_PORT and one per listener) are picked free, and again if another process took one
    (harness.start_envoy_on_free_ports)."""
    def start(ports: dict[str, int]) -> harness.Process:
        config = WORK_DIR / f"{name}.yaml"
        write_config(config, ports)
        return harness.Process(name, [*prefix, harness.envoy_bin(), "-c", config,
                                      "--disable-hot-restart", "--concurrency", "1",
                                      "--log-level", "warning", *extra_args], WORK_DIR)

    # /ready answers 200 once every static listener is bound.
    proc, ports = harness.start_envoy_on_free_ports(
        start, {"ADMIN_PORT": 0, **{n: 0 for n in listeners}}, admin="ADMIN_PORT",
        ready=listeners[0])
    return Envoy(proc, f"http://{HOST}:{ports['ADMIN_PORT']}", ports)


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

    def start_bench_envoy(self, name: str, extra_args: Sequence[str] = ()) -> Envoy:
        def write(path: Path, ports: dict) -> None:
            variables = {
                "BIND_ADDRESS": HOST, "ADMIN_PORT": str(ports["ADMIN_PORT"]),
                **{f"PORT_{n.upper()}": str(ports[n]) for n in LISTENERS},
                "UPSTREAM_HOST": HOST, "UPSTREAM_PORT": str(self.upstream.ports["upstream"]),
                "WASM_PATH": str(harness.wasm_path()), "ISSUER": self.issuer,
                "WASM_ALT_PATH": str(self.settings.wasm_alt or harness.wasm_path()),
                "FLOOR_WASM_PATH": str(floor_wasm()),
                # Every distinct token a workload sends, and the pre-flight ones.
                "JWT_CACHE_SIZE": str(self.settings.tokens + 100),
                "JWKS": compact(self.jwks), "JWKS_STRING": json.dumps(compact(self.jwks)),
            }
            wasm = render.load_filter_config(variables, BENCH_FILTER)
            pure = {**wasm, "signature_backend": "pure"}
            variables["FILTER_CONFIG_PURE"] = json.dumps(compact(pure))  # as render does
            render.render(path, variables, filter_config=wasm, filter_config_path=BENCH_FILTER,
                          template=BENCH_TEMPLATE)

        return start_envoy(name, LISTENERS, write, self.settings.cpus(under_test=True),
                           extra_args)

    def client(self, envoy: Envoy, listener: str = "none") -> EnvoyClient:
        return EnvoyClient(envoy.url(listener), envoy.admin_url)


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
        while_running: Callable[[], None] = lambda: None,
        headers: dict[str, str] | None = None) -> dict:
    """Run wrk with wrk.lua against `url`; returns what its done() wrote. `while_running` is
    called about once a second until wrk exits; `headers` go on every request."""
    result, passed = WORK_DIR / f"wrk-{name}.json", WORK_DIR / f"wrk-{name}.passed"
    result.unlink(missing_ok=True)
    passed.unlink(missing_ok=True)
    env = {"BENCH_PATH": PATH, "BENCH_TOKEN": token or "",
           "BENCH_TOKEN_FILE": str(token_file or ""),
           "BENCH_ONE_PASS": str(passed) if one_pass else "",
           "BENCH_RATE": f"{rate:.1f}" if rate else "", "BENCH_RESULT_FILE": str(result),
           "BENCH_QUANTILES": "1" if rate else "",
           "BENCH_HEADERS": ";".join(f"{k}={v}" for k, v in (headers or {}).items())}
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


# A little more than envoy/bench.yaml.tmpl's stats_flush_interval.
STATS_FLUSH_S = 1.2
STATS_FILTER = r"okta_jwt|jwt_authn\.|rbac\.|^http\.[a-z_]+\.downstream_rq_[1-5]xx$"


def decision_time_totals(envoy: Envoy) -> tuple[float, int]:
    """The filter's okta_jwt_decision_time_us histogram (the gate's time per decided request,
    timed in the VM with the host clock, whole microseconds), summed over every VM: its
    Prometheus sum and count. Envoy's quantiles interpolate within wide buckets; the mean
    from sum and count does not."""
    text = urllib.request.urlopen(f"{envoy.admin_url}/stats/prometheus?filter=decision_time",
                                  timeout=10).read().decode()
    total, count = 0.0, 0
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if "decision_time_us_sum" in name:
            total += float(value)
        elif "decision_time_us_count" in name:
            count += int(float(value))
    return total, count


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
    # The filter's mean decision time in the VM (us) over the run, when it decided requests.
    decision_us: float | None = None
    rps_rounds: list[float] = field(default_factory=list)
    # Paced runs only: evenly spaced latency quantiles (us), to pool interleaved runs.
    quantiles: list[float] = field(default_factory=list, repr=False)


def measure(ctx: Context, envoy: Envoy, workload: str, listener: str, seconds: int,
            token: str, *, token_file: Path | None = None, rate: float = 0,
            round_: int = 1) -> Run:
    """One wrk run after a warm-up with the valid `token`, which every request of the run
    carries too, unless there is a token file: then every token in it is sent at most once,
    and the run ends when they are used up, or after `seconds`."""
    url, client = envoy.url(listener), ctx.client(envoy)
    label = f"{workload}-{listener}-{round_}" + ("-paced" if rate else "")
    pids = {"envoy": envoy.pid, "upstream": ctx.upstream.pid}
    wait_for_idle(ctx, pids)
    wrk(ctx, f"{label}-warmup", url, WARMUP_SECONDS, token=token)
    # Histograms reach the admin at a stats flush (stats_flush_interval, 1 s here): wait for
    # the one after the warm-up.
    filter_listener = listener.startswith("wasm")
    if filter_listener:
        time.sleep(STATS_FLUSH_S)
    before = client.stats(STATS_FILTER)
    decisions_before = decision_time_totals(envoy)
    log(f"{workload}: {listener}" + (f" paced at {rate:,.0f} rps" if rate else "")
        + f" for {seconds} s")
    cpu = CpuMeter(pids)
    r = wrk(ctx, label, url, seconds, token=None if token_file else token,
            token_file=token_file, one_pass=token_file is not None, rate=rate)
    cpu.stop()
    after = client.stats(STATS_FILTER)
    if filter_listener:
        time.sleep(STATS_FLUSH_S)
    decided = [a - b for a, b in zip(decision_time_totals(envoy), decisions_before)]
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
              target_rps=rate or None, quantiles=[float(q) for q in r.get("quantiles") or []],
              decision_us=round(decided[0] / decided[1], 2) if decided[1] else None)
    log(f"  {run.rps:,.0f} rps, p50 {run.p50_us:.0f} us, p99 {run.p99_us:.0f} us, "
        f"Envoy {run.envoy_cpu_us:.0f} us CPU per request, statuses {run.statuses}, "
        f"CPUs busy: {cpu_text(run.cpu)}")
    return run


def cpu_text(cpu: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:.0%}" for name, share in cpu.items())


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
