"""An invalid filter configuration is rejected when Envoy loads it, with a log line naming
the field, and no request gets through. Each case runs its own Envoy."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import harness
import render  # envoy/render.py, importable once harness is

pytestmark = pytest.mark.local_only


class RecordingUpstream:
    """A loopback upstream that records every request reaching it."""

    def __init__(self):
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append(self.path)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream():
    up = RecordingUpstream()
    yield up
    up.close()


@pytest.fixture
def own_envoy(tmp_path, upstream):
    """Starts an Envoy whose filter config is the test's variation of the standard one."""
    procs = []
    listen, admin = harness.free_port(), harness.free_port()
    variables = harness.envoy_variables(listen_port=listen, admin_port=admin,
                                        idp_port=harness.free_port(),  # nothing listens
                                        upstream_port=upstream.port)

    def start(mutate) -> tuple[harness.Process, str, int]:
        config = render.load_filter_config(variables)
        mutate(config)
        proc = harness.start_envoy(tmp_path, variables, filter_config=config)
        procs.append(proc)
        return proc, f"http://127.0.0.1:{admin}", listen

    yield start
    for proc in procs:
        proc.stop()


def _get(port: int, path: str) -> int | None:
    """Status of GET `path`, or None when nothing answers on the port."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None


def _set(path: list, value):
    def mutate(config: dict):
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


def test_the_standard_config_loads(own_envoy, upstream):
    # Control for the cases below: the same setup, unmodified, serves requests.
    proc, admin_url, listen = own_envoy(lambda config: None)
    harness.wait_envoy_ready(proc, admin_url, listen)
    assert _get(listen, "/healthz") == 200
    assert upstream.seen == ["/healthz"]


@pytest.mark.parametrize("mutate, field", [
    pytest.param(_set(["providers", "okta", "audiences"], []), "providers.okta.audiences",
                 id="empty audiences"),
    pytest.param(_set(["providers", "okta", "issuer_url"], "https://x"), "issuer_url",
                 id="unknown provider field"),
    pytest.param(_set(["realms"], "api"), "realms", id="unknown top-level field"),
    pytest.param(_set(["providers", "okta", "algorithms"], ["RS256", "HS256"]),
                 "providers.okta.algorithms", id="HS256 allowed"),
    pytest.param(_set(["providers", "okta", "algorithms"], ["none"]),
                 "providers.okta.algorithms", id="alg none allowed"),
    pytest.param(_set(["providers"], {}), "providers", id="no providers"),
])
def test_invalid_config_is_rejected(own_envoy, upstream, mutate, field):
    proc, admin_url, listen = own_envoy(mutate)
    # Envoy either exits, or keeps running without a working listener: wait for the
    # log line naming the field, then for one of those two outcomes (all bounded).
    def gave_up() -> str | None:
        if field in proc.output():
            return None
        if not proc.alive:
            return proc.exit_reason()
        if harness.envoy_ready(admin_url, listen):
            return "Envoy accepted the configuration"
        return None

    harness.wait_until(lambda: field in proc.output(), 60, f"a log line naming {field}",
                       interval=0.1, abort=gave_up)
    harness.wait_until(lambda: not proc.alive or harness.envoy_ready(admin_url, listen)
                       or harness.http_status(f"{admin_url}/ready") is not None, 60,
                       "Envoy to exit or to settle", interval=0.1)
    if proc.alive:
        assert _get(listen, "/healthz") != 200
    assert upstream.seen == []
