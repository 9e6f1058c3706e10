"""The workloads: the tokens they send, the checks before them, how each is run and how its
runs combine (median of rounds, pooled paced slices), and the memory check
(tests/bench/bench.py describes them)."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from driver import (BUSY_CPU, LISTENERS, PATH, TOKENS_DIR, WORK_DIR, BenchError, Context, Envoy,
                    Run, check, log, measure, wrk)
from idp_client import IdpClient, token_claims

# The listeners every workload measures before its own (envoy/bench.yaml.tmpl): no auth, the
# two native ones, and the wasm floor.
ANCHORS = ("none", "native", "native_cached", "floor")
# What ratios are taken against, in the table's order.
BASES = ("native_cached", "floor", "native", "none")
# Listeners that check no token: they answer 200 whatever the token (the floor only wants one).
NO_CHECK = ("none", "floor")

# name, listeners, what (wasm_alt joins wasm's workloads when BENCH_WASM_ALT is set)
WORKLOADS = (
    ("same", (*ANCHORS, "wasm"), "one valid token on every request"),
    ("unique", (*ANCHORS, "wasm"), "distinct valid tokens, each sent once"),
    ("invalid", (*ANCHORS, "wasm"),
     "as unique, every 10th token invalid (half bad signature, half expired)"),
    ("pure", (*ANCHORS, "wasm_pure"), "as unique, with pure-Rust signature checks"),
)
NAMES = tuple(name for name, _, _ in WORKLOADS)
INVALID_EVERY = 10
MINT_CHUNK = 2000  # tokens per /control/mint-many call: a few seconds of RSA signing
TOKEN_LIFETIME_S = 24 * 3600
TOKEN_MIN_VALIDITY_S = 3600  # a kept pool whose oldest token expires sooner is minted again


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
            expected = status
            if listener in NO_CHECK:
                expected = 401 if listener == "floor" and token is None else 200
            got = client.get(PATH, token).status
            if got != expected:
                wrong.append(f"{listener}: {case}: expected {expected}, got {got}")
    if wrong:
        raise BenchError("listeners answer wrongly (misconfigured?):\n  " + "\n  ".join(wrong)
                         + f"\n{envoy.proc.tail()}")


# --- the benchmark ----------------------------------------------------------------------

@dataclass
class WorkloadResult:
    name: str
    what: str
    pool_size: int
    rss_kib: list[list[int]] = field(default_factory=list)  # per round: idle, after
    runs: list[Run] = field(default_factory=list)
    # Per base (BASES) and listener, its rps over the base's in each round (runs seconds apart
    # in one Envoy).
    x_rounds: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def x(self, listener: str, base: str) -> float | None:
        """The median of the per-round ratios of `listener` to `base`: a paired comparison,
        so drift of the machine between rounds cancels out."""
        ratios = sorted(self.x_rounds.get(base, {}).get(listener, []))
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
        if ctx.settings.wasm_alt and "wasm" in listeners:
            listeners = (*listeners, "wasm_alt")
        rounds: dict[str, list[Run]] = {listener: [] for listener in listeners}
        for round_ in range(1, ctx.settings.rounds + 1):
            envoy = ctx.start_bench_envoy(f"envoy-{name}-{round_}")
            try:
                result.rss_kib.append([envoy.rss_kib()])
                preflight(ctx, envoy, tokens)
                for listener in listeners:
                    run = measure(ctx, envoy, name, listener, seconds, tokens.valid,
                                  token_file=token_file, round_=round_)
                    auth = name == "invalid" and listener not in NO_CHECK
                    check(ctx, run, tokens.invalid_share if auth else 0.0)
                    rounds[listener].append(run)
                result.runs = [median(runs) for runs in rounds.values()]
                for base in BASES:
                    if base not in rounds or not rounds[base][-1].rps:
                        continue
                    for listener, runs in rounds.items():
                        result.x_rounds.setdefault(base, {}).setdefault(listener, []).append(
                            round(runs[-1].rps / rounds[base][-1].rps, 3))
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


# The paced comparison: none first (the others' added p99 is over it).
PACED = ("none", "native", "native_cached", "floor", "wasm")


def added_latency(ctx: Context, envoy: Envoy, tokens: Tokens, same: list[Run]) -> dict:
    """The same token, paced at half of wasm's closed-loop peak: the p99 each filter adds.

    On a shared machine a single disturbance moves one run's p99 by milliseconds, so the
    listeners take turns in short slices (PACED in turn, 3 x BENCH_ROUNDS slices each), and each listener's p50 and p99 come from all its slices' latencies pooled:
    whatever disturbs the machine is spread over them all alike."""
    rate = next(r.rps for r in same if r.listener == "wasm") / 2
    slices = 3 * ctx.settings.rounds
    seconds = max(2, ctx.settings.seconds // 3)
    runs: dict[str, list[Run]] = {listener: [] for listener in PACED}
    for i in range(1, slices + 1):
        for listener, done in runs.items():
            run = measure(ctx, envoy, "same-paced", listener, seconds, tokens.valid, rate=rate,
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
