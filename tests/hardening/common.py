"""What `make fuzz-envoy` (fuzz_envoy.py) and `make soak` (soak.py) share: the integration
harness (processes, free ports, bounded waits), settings from the environment, the scan of
Envoy's log for VM failures, Envoy's RSS, and the output directory."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))
import harness  # noqa: E402  (processes, ports, bounded waits; puts envoy/ on sys.path)
from envoy_client import EnvoyClient  # noqa: E402
from idp_client import IdpClient  # noqa: E402

__all__ = ["harness", "EnvoyClient", "IdpClient"]

# What Envoy and the proxy-wasm SDK write when a VM fails: a Rust panic (the SDK's panic hook
# logs "panicked at ..."), a trap or uncaught runtime error in a callback, a VM that failed to
# start or was marked failed, a plugin that failed closed. Any of these is a finding.
VM_FAILURE = re.compile(
    r"panicked|wasm trap|RuntimeError|Function: proxy_on_\w+ failed|\bVM\b[^\n]*\bfailed\b"
    r"|Wasm VM failed|failed to load|fail closed|\]\[critical\]", re.I)


def out_dir(name: str) -> Path:
    """target/<name>/, with a fresh work/ for logs and rendered configurations."""
    out = harness._target_dir() / name
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return out


def number(name: str, default: float, minimum: float = 0) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise SystemExit(f"{name}={raw!r}: must be at least {minimum}")
    return value


def log(tag: str, message: str) -> None:
    print(f"[{tag} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def vm_failures(proc: harness.Process) -> list[str]:
    """The lines of Envoy's output (log and access log) that say a VM failed."""
    return [line for line in proc.output().splitlines() if VM_FAILURE.search(line)]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise harness.HarnessError(f"no VmRSS in /proc/{pid}/status")


def machine_load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(segment: str) -> bytes:
    """Lenient: what a decoder that ignores the unused low bits of the last character reads."""
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n")
