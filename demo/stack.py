#!/usr/bin/env python3
"""`make run`: the demo stack (mock Okta IdP, echo upstream, Envoy with the filter) on
fixed ports, in the foreground until Ctrl-C. Builds nothing: `make run` builds first.

Ports (environment): ENVOY_PORT 10000, ADMIN_PORT 9901, IDP_PORT 8080, UPSTREAM_PORT 8081.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
import harness  # noqa: E402  (the processes and readiness waits the integration suite uses)
from idp_client import IdpClient  # noqa: E402


def _port(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    if not value.isdigit() or not 0 < int(value) < 65536:
        sys.exit(f"stack.py: {name}={value!r} is not a port")
    return int(value)


def _commented(command: str, comment: str) -> str:
    return f"  {command:<72} # {comment}"


def explain_files(stack: harness.Stack, workdir: Path) -> tuple[Path, Path]:
    """The demo's filter configuration and the IdP's key set, for `okta-jwt explain`."""
    config = workdir / "filter.json"
    template = (REPO / "envoy" / "filter.json.tmpl").read_text()
    config.write_text(template.replace("${IDP_URL}", stack.idp_url))
    keys = workdir / "keys.json"
    keys.write_text(json.dumps(IdpClient(stack.idp_url).keys()))
    return config, keys


def usage(stack: harness.Stack, config: Path, keys: Path) -> str:
    token_url = f"{stack.idp_url}/oauth2/default/v1/token"
    api = f"{stack.envoy_url}/api/orders"
    return f"""
  Envoy      {stack.envoy_url}
  admin      {stack.admin_url}   (stats: {stack.admin_url}/stats?filter=okta_jwt)
  mock IdP   {stack.idp_url}/oauth2/default/.well-known/openid-configuration
  logs       {stack.processes['envoy'].stderr_path.parent}

Try it:

  # a token for 0oa-demo-client with scope orders:read
  TOKEN=$(curl -s -u 0oa-demo-client:demo-secret -d grant_type=client_credentials \\
      -d scope=orders:read {token_url} \\
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

{_commented(f'curl -i -H "Authorization: Bearer $TOKEN" {api}', "200: has orders:read")}
{_commented(f'curl -i -X POST -H "Authorization: Bearer $TOKEN" {api}', "403: needs orders:write")}
{_commented(f"curl -i {api}", "401: no token")}

  # why the 403? the filter's own decision, offline (make cli builds okta-jwt)
  target/release/okta-jwt explain --config {config} --jwks {keys} \\
      --token "$TOKEN" --method POST --path /api/orders

Ctrl-C stops everything.
"""


def main() -> int:
    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True

    workdir = Path(tempfile.mkdtemp(prefix="okta-jwt-demo-"))
    try:
        stack = harness.start_stack(
            workdir, envoy_port=_port("ENVOY_PORT", 10000), admin_port=_port("ADMIN_PORT", 9901),
            idp_port=_port("IDP_PORT", 8080), upstream_port=_port("UPSTREAM_PORT", 8081),
            concurrency=int(os.environ.get("ENVOY_CONCURRENCY", "2")))
    except harness.HarnessError as e:
        print(f"stack.py: {e}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        print(usage(stack, *explain_files(stack, workdir)), flush=True)
        while not stop:
            for proc in stack.processes.values():
                if not proc.alive:
                    print(f"stack.py: {proc.exit_reason()}\n{proc.tail()}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        print("\nstopping ...", flush=True)
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
