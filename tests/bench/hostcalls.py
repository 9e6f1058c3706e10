#!/usr/bin/env python3
"""`make bench-hostcalls`: every call between Envoy and the wasm VM for one request, counted.

Starts the bench's Envoy (envoy/bench.yaml.tmpl, as `make bench` does) with
`--component-log-level wasm:trace`, under which Envoy logs each callback into the VM
(`[host->vm] proxy_on_...`) and each host call out of it (`[vm->host] env.proxy_...`) with
their arguments. Sends one request at a time and cuts the log at the stream's
`proxy_on_delete`; per case it prints the host calls, the callbacks, and the bytes that cross
the boundary: host to VM, each buffer Envoy asks the VM to allocate for a result
(`proxy_on_memory_allocate(size)`); VM to host, the lengths passed to the header and property
calls.

Cases: on `wasm`, the second request with one token (a token-cache hit: the bench's `same`
workload), a fresh token (a miss, signature checked by Envoy's BoringSSL), no token (401); on
`floor`, a token and none. Environment: as `make bench` (ENVOY_BIN, OKTA_JWT_WASM, FLOOR_WASM).
Output: the table, and target/bench/hostcalls-<UTC time>.json (also latest-hostcalls.json).
"""

from __future__ import annotations

import re
import shutil
import signal
import sys
import time
from collections import Counter
from datetime import datetime, timezone

from driver import (HOST, IDP_KEY_DIR, IDP_PUBLIC_URL, PATH, WORK_DIR, BenchError, Context,
                    Envoy, Settings, log, start_upstream)
import harness  # noqa: E402  (on sys.path once driver is imported)
from envoy_client import EnvoyClient  # noqa: E402
from idp_client import IdpClient  # noqa: E402
from report import environment, write_json  # noqa: E402
from workloads import INVALID_EVERY, NAMES  # noqa: E402

CALL = re.compile(r"\[(host->vm|vm->host)\] (?:env\.)?(proxy_\w+)\(([^)]*)\)")
# Host calls whose arguments carry lengths of what the VM hands to Envoy: argument indexes.
VM_TO_HOST_LENGTHS = {
    "proxy_get_header_map_value": (2,),
    "proxy_remove_header_map_value": (2,),
    "proxy_replace_header_map_value": (2, 4),
    "proxy_add_header_map_value": (2, 4),
    "proxy_get_property": (1,),
    "proxy_send_local_response": (2, 4, 6),
    "proxy_call_foreign_function": (1, 3),
}
WAIT_S = 10


def trace(envoy: Envoy, listener: str, token: str | None) -> dict:
    """One request; the VM calls its stream made, from the trace log."""
    log_path = envoy.proc.stderr_path
    start = log_path.stat().st_size
    status = EnvoyClient(envoy.url(listener), envoy.admin_url).get(PATH, token).status
    deadline = time.monotonic() + WAIT_S
    while True:
        with open(log_path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
        calls = [m.groups() for m in CALL.finditer(text)]
        created = next((args for d, name, args in calls
                        if name == "proxy_on_context_create" and d == "host->vm"), None)
        context = created.split(",")[0].strip() if created else None
        if context and any(name == "proxy_on_delete" and args.strip() == context
                           for _, name, args in calls):
            break
        if time.monotonic() > deadline:
            raise BenchError(f"{listener}: no proxy_on_delete in the trace within {WAIT_S} s")
        time.sleep(0.05)
    # This stream's calls only: from its creation to its deletion.
    first = next(i for i, (d, name, args) in enumerate(calls)
                 if name == "proxy_on_context_create" and args.split(",")[0].strip() == context)
    last = next(i for i, (d, name, args) in enumerate(calls)
                if name == "proxy_on_delete" and args.strip() == context)
    mine = calls[first:last + 1]
    host_calls = Counter(name for d, name, _ in mine if d == "vm->host")
    callbacks = Counter(name for d, name, _ in mine if d == "host->vm")
    to_vm = sum(int(args) for d, name, args in mine if name == "proxy_on_memory_allocate")
    to_host = 0
    for d, name, args in mine:
        values = [a.strip() for a in args.split(",")]
        for i in VM_TO_HOST_LENGTHS.get(name, ()):
            if i < len(values) and values[i].isdigit():
                to_host += int(values[i])
    return {"status": status, "host_calls": dict(host_calls), "callbacks": dict(callbacks),
            "bytes_to_vm": to_vm, "bytes_to_host": to_host,
            "sequence": [f"{'>' if d == 'host->vm' else '<'} {name}({args})"
                         for d, name, args in mine]}


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        settings = Settings.from_env(NAMES, INVALID_EVERY)
        shutil.rmtree(WORK_DIR, ignore_errors=True)
        WORK_DIR.mkdir(parents=True)
        IDP_KEY_DIR.mkdir(parents=True, exist_ok=True)
        _, idp_url = harness.start_mock("mock-idp", WORK_DIR, [
            "--listen", f"{HOST}:0", "--key-dir", IDP_KEY_DIR, "--public-url", IDP_PUBLIC_URL])
        idp = IdpClient(idp_url, timeout=60)
        ctx = Context(settings, idp, f"{IDP_PUBLIC_URL}/oauth2/default", idp.keys(),
                      upstream=start_upstream(settings))
        same, fresh = idp.mint(lifetime_s=3600), idp.mint(lifetime_s=3600)
        envoy = ctx.start_bench_envoy("envoy-hostcalls",
                                      ["--component-log-level", "wasm:trace"])
        try:
            trace(envoy, "wasm", same)  # fills the token cache
            cases = {
                "wasm, same token (cache hit)": trace(envoy, "wasm", same),
                "wasm, new token (cache miss)": trace(envoy, "wasm", fresh),
                "wasm, no token (401)": trace(envoy, "wasm", None),
                "floor, token": trace(envoy, "floor", same),
                "floor, no token (401)": trace(envoy, "floor", None),
            }
        finally:
            envoy.proc.stop()
            ctx.upstream.proc.stop()
    except (harness.HarnessError, OSError, ValueError, StopIteration) as e:
        print(f"hostcalls: error: {e}", file=sys.stderr)
        return 1
    out = []
    for case, r in cases.items():
        out.append(f"{case}: status {r['status']}; {sum(r['host_calls'].values())} host calls, "
                   f"{sum(r['callbacks'].values())} callbacks into the VM; bytes to the VM "
                   f"{r['bytes_to_vm']:,}, to Envoy {r['bytes_to_host']:,}")
        out.append("  host calls: " + ", ".join(f"{n.removeprefix('proxy_')} x{c}"
                                                for n, c in r["host_calls"].items()))
        out.append("  callbacks:  " + ", ".join(f"{n.removeprefix('proxy_')} x{c}"
                                                for n, c in r["callbacks"].items()))
    data = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "environment": environment(), "cases": cases}
    path, latest = write_json("hostcalls", data)
    print("\n".join(out))
    print(f"\nJSON (with each call's arguments in order): {path} (also {latest.name})")
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
