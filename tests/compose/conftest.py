"""Fixtures for the scenarios that run against the compose stack (docker-compose.yml).

The stack is found through the environment, so the same files run from the compose `tests`
service (service names) and from the host (published ports):
  STACK_ENVOY_URL, STACK_ADMIN_URL, STACK_IDP_URL   Envoy's listener and admin, the mock IdP
The `host` scenarios also drive the container engine, which only the host can do
(docker/compose.sh sets these for them):
  COMPOSE_CMD       the compose command line for the stack's project
  ENGINE_CMD        docker or podman
  COMPOSE_NETWORK   the project's network
  IDP_KEYS_DIR      the host directory mounted as the mock IdP's key directory
Standalone on purpose: nothing is imported from tests/integration.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import requests

REALM = "api"  # envoy/filter.json.tmpl


def pytest_configure(config):
    config.addinivalue_line("markers", "host: drives the container engine (stop, start, "
                                       "network disconnect): run from the host by make compose-test")
    config.addinivalue_line("markers", "oci: checks the plugin image that make oci builds")


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: these tests run against the compose stack "
                    "(make compose-test, or the compose `tests` service)", pytrace=False)
    return value


def wait_until(what: str, check, timeout_s: float = 60.0, interval_s: float = 0.5):
    """Calls `check` until it returns something truthy, at most `timeout_s`; returns it."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        try:
            last = check()
            if last:
                return last
        except (requests.RequestException, subprocess.CalledProcessError) as e:
            last = e
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")
        time.sleep(interval_s)


class Stack:
    """Envoy (listener and admin) and the mock IdP of the running compose stack."""

    def __init__(self, envoy_url: str, admin_url: str, idp_url: str, timeout: float = 20.0):
        self.envoy_url, self.admin_url, self.idp_url = envoy_url, admin_url, idp_url
        self.timeout = timeout  # above every filter-side wait (JWKS timeout_ms is 2000-5000)

    def _session(self) -> requests.Session:
        # A new connection for every call: containers come and go between calls.
        s = requests.Session()
        s.trust_env = False  # no proxies or .netrc credentials from the environment
        s.headers["Connection"] = "close"
        return s

    # -- through Envoy -----------------------------------------------------------------
    def get(self, path: str, token: str | None = None, method: str = "GET") -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        with self._session() as s:
            return s.request(method, self.envoy_url + path, headers=headers, timeout=self.timeout)

    def stats(self, filter_: str = "okta_jwt") -> dict[str, int]:
        """Counters and gauges whose name matches `filter_`, Envoy's `wasmcustom.` prefix dropped."""
        with self._session() as s:
            r = s.get(f"{self.admin_url}/stats", params={"filter": filter_}, timeout=self.timeout)
        r.raise_for_status()
        out = {}
        for line in r.text.splitlines():
            name, _, value = line.partition(": ")
            if value.strip().lstrip("-").isdigit():
                out[name.removeprefix("wasmcustom.")] = int(value)
        return out

    def stat(self, name: str) -> int:
        return self.stats(f"^(wasmcustom\\.)?{name}$").get(name, 0)

    def cluster_hosts(self, cluster: str) -> set[str]:
        """Addresses (ip:port) of a cluster's hosts, as Envoy resolved them."""
        with self._session() as s:
            r = s.get(f"{self.admin_url}/clusters", timeout=self.timeout)
        r.raise_for_status()
        return {line.split("::")[1] for line in r.text.splitlines()
                if line.startswith(f"{cluster}::") and line.count("::") >= 3
                and line.split("::")[2] == "cx_active"}

    # -- the mock IdP --------------------------------------------------------------------
    def mint(self, server: str, **fields) -> str:
        """A token from authorization server `server` (POST /control/mint: `claims`,
        `header`, `lifetime_s`, `signing_key`)."""
        with self._session() as s:
            r = s.post(f"{self.idp_url}/control/mint", json={"server": server, **fields},
                       timeout=self.timeout)
        r.raise_for_status()
        return r.json()["token"]

    def rotate(self, server: str) -> list[str]:
        """In the IdP's memory only (the key files stay): a new key in front."""
        with self._session() as s:
            r = s.post(f"{self.idp_url}/control/rotate", json={"server": server},
                       timeout=self.timeout)
        r.raise_for_status()
        return r.json()["kids"]

    def kids(self, server: str) -> list[str]:
        with self._session() as s:
            r = s.get(f"{self.idp_url}/oauth2/{server}/v1/keys", timeout=self.timeout)
        r.raise_for_status()
        return [k["kid"] for k in r.json()["keys"]]

    def idp_answers(self) -> bool:
        try:
            with self._session() as s:
                return s.get(f"{self.idp_url}/oauth2/default/v1/keys", timeout=3).status_code == 200
        except requests.RequestException:
            return False


class Engine:
    """The container engine's controls over the stack, from the host."""

    def __init__(self):
        self.compose = shlex.split(env("COMPOSE_CMD"))
        self.engine = env("ENGINE_CMD")
        self.network = env("COMPOSE_NETWORK")
        self.keys_dir = Path(env("IDP_KEYS_DIR"))

    def _run(self, argv: list[str]) -> str:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=180)
        if p.returncode != 0:
            pytest.fail(f"{shlex.join(argv)} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
        return p.stdout

    def compose_run(self, *args: str) -> str:
        return self._run(self.compose + ["--profile", "standby", *args])

    def container(self, service: str) -> str:
        cid = self.compose_run("ps", "-q", service).strip()
        assert cid, f"no container for {service}"
        return cid

    def inspect(self, service: str, fmt: str) -> str:
        return self._run([self.engine, "inspect", "-f", fmt, self.container(service)]).strip()

    def started_at(self, service: str) -> str:
        return self.inspect(service, "{{.State.StartedAt}}")

    def ip(self, service: str) -> str:
        return self.inspect(service, "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}").strip()

    def stop(self, service: str) -> None:
        self.compose_run("stop", "-t", "10", service)

    def start(self, service: str) -> None:
        self.compose_run("start", service)

    def up(self, service: str) -> None:
        """Creates and starts a service that `up` left out (its profile)."""
        self.compose_run("up", "-d", "--no-build", "--no-deps", service)

    def disconnect(self, service: str) -> None:
        self._run([self.engine, "network", "disconnect", self.network, self.container(service)])

    def connect(self, service: str) -> None:
        # The alias is what compose gave it: other containers find it by its service name.
        self._run([self.engine, "network", "connect", "--alias", service, self.network,
                   self.container(service)])


@pytest.fixture(scope="session")
def stack() -> Stack:
    return Stack(env("STACK_ENVOY_URL"), env("STACK_ADMIN_URL"), env("STACK_IDP_URL"))


@pytest.fixture(scope="session")
def engine() -> Engine:
    return Engine()


def denial(r: requests.Response) -> dict:
    """The JSON body every denial carries."""
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = json.loads(r.content)
    assert set(body) == {"error", "error_description"}, body
    return body


def wait_envoy_reaches(stack: Stack, engine: Engine, service: str, cluster: str) -> None:
    """Waits until Envoy's cluster resolves `service` to its container's current address (a
    restarted or reconnected container may have a new one; Envoy re-resolves every 5 s)."""
    def follows():
        ip = engine.ip(service)
        return ip and f"{ip}:8080" in stack.cluster_hosts(cluster)

    wait_until(f"Envoy's {cluster} cluster to follow {service}'s address", follows, timeout_s=60)
