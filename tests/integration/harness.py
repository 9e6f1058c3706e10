"""Process management for the integration stack: mock IdP, echo upstream and Envoy.

Standard library only, so `demo/stack.py` (the `make run` demo) can use it as well as pytest.
Every child runs in its own process group with its output in files under a work
directory; every wait is bounded in polls and in time; children are stopped by their
owner (a fixture finalizer), by an atexit backstop, and by the kernel if we die hard.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, TypeVar

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "envoy"))
import render  # noqa: E402  (envoy/render.py: the same renderer `make`, compose and CI use)

T = TypeVar("T")


class HarnessError(RuntimeError):
    pass


# --- where the binaries are -------------------------------------------------------------


# The authorization servers that envoy/filter.json.tmpl and the tests use.
IDP_SERVERS = "default,second,strict,rotating,broken,org"

def _target_dir() -> Path:
    return REPO / os.environ.get("CARGO_TARGET_DIR", "target")  # an absolute value wins


def _artifact(env: str, default: Path, make_target: str) -> Path:
    path = Path(os.environ.get(env) or default)
    if not path.is_file():
        raise HarnessError(f"{path} not found: run `make {make_target}` (or set {env})")
    return path


def wasm_path() -> Path:
    return _artifact("OKTA_JWT_WASM",
                     _target_dir() / "wasm32-wasip1/release/okta_jwt_filter.wasm", "build")


def mock_idp_bin() -> Path:
    return _artifact("MOCK_IDP_BIN", _target_dir() / "release/mock-idp", "build-tools")


def echo_bin() -> Path:
    return _artifact("ECHO_UPSTREAM_BIN", _target_dir() / "release/echo-upstream", "build-tools")


def envoy_bin() -> Path:
    venv_envoy = REPO / ".venv/bin/envoy"
    default = venv_envoy if venv_envoy.exists() else Path(shutil.which("envoy") or venv_envoy)
    return _artifact("ENVOY_BIN", default, "setup")


# --- bounded waiting --------------------------------------------------------------------

def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.05,
               abort: Callable[[], str | None] = lambda: None) -> T:
    """Poll `check` until it returns a truthy value; bounded in polls and in seconds.

    `abort` returns a reason to give up early (e.g. the process we wait for has exited).
    """
    deadline = time.monotonic() + timeout
    for _ in range(math.ceil(timeout / interval) + 1):
        value = check()
        if value:
            return value
        reason = abort()
        if reason:
            raise HarnessError(f"gave up waiting for {what}: {reason}")
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}")


def free_port() -> int:
    # Bind to port 0, read it, close: another process could take it before we use it,
    # which start_stack() handles by retrying.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


# --- child processes --------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
try:
    _libc = ctypes.CDLL("libc.so.6", use_errno=True) if sys.platform == "linux" else None
except OSError:
    _libc = None


def _child_setup() -> None:
    # If the test runner is SIGKILLed, atexit never runs: have the kernel TERM the child.
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


STARTED: list["Process"] = []  # every process this interpreter started (for log tails)


class Process:
    def __init__(self, name: str, argv: list[str | Path], logdir: Path,
                 env: dict[str, str] | None = None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.stdout_path = logdir / f"{name}.stdout.log"
        self.stderr_path = logdir / f"{name}.stderr.log"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env={**os.environ, **(env or {})}, cwd=logdir,
                start_new_session=True, preexec_fn=_child_setup)
        STARTED.append(self)

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def exit_reason(self) -> str | None:
        code = self.popen.poll()
        return None if code is None else f"{self.name} exited with status {code}"

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        """stdout and stderr together (Envoy logs to stderr, its access log to stdout)."""
        return self.stdout() + self.stderr()

    def tail(self, lines: int = 40) -> str:
        parts = []
        for path in (self.stdout_path, self.stderr_path):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(parts)

    def stop(self, timeout: float = 5.0) -> None:
        """TERM the process group, then KILL it if it lingers.

        Only signalled while the leader is unreaped, so its id cannot have been reused.
        """
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self.alive:
                return
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(timeout=timeout)
                return
            except subprocess.TimeoutExpired:
                continue


@atexit.register
def _stop_everything() -> None:
    for proc in reversed(STARTED):
        proc.stop(timeout=2.0)


# --- the pieces of the stack ------------------------------------------------------------

_LISTENING = re.compile(r"^listening on (http://\S+)$", re.M)


def start_mock(kind: str, logdir: Path, args: list[str], timeout: float = 30.0,
               name: str | None = None) -> tuple[Process, str]:
    """Start `mock-idp` or `echo-upstream`; return it and the URL from its readiness line.

    `name` (default: `kind`) names its log files, so a restarted mock keeps the old logs.
    """
    binary = mock_idp_bin() if kind == "mock-idp" else echo_bin()
    proc = Process(name or kind, [binary, *args], logdir)
    try:
        match = wait_until(lambda: _LISTENING.search(proc.stdout()), timeout,
                           f"{kind} to print its readiness line", abort=proc.exit_reason)
    except HarnessError as e:
        proc.stop()
        raise HarnessError(f"{e}\n{proc.tail()}") from None
    return proc, match.group(1)


def envoy_variables(*, listen_port: int, admin_port: int, idp_port: int,
                    upstream_port: int, host: str = "127.0.0.1") -> dict[str, str]:
    return {
        "BIND_ADDRESS": host,
        "LISTEN_PORT": str(listen_port),
        "ADMIN_PORT": str(admin_port),
        "WASM_PATH": str(wasm_path()),
        "UPSTREAM_HOST": host,
        "UPSTREAM_PORT": str(upstream_port),
        "IDP_HOST": host,
        "IDP_PORT": str(idp_port),
        "IDP_URL": f"http://{host}:{idp_port}",
    }


class EcdsFile:
    """The filter's configuration as a file-based ECDS resource (Envoy's `config_discovery`
    with a `path_config_source`): `write` replaces it while Envoy runs.

    Envoy reloads the file when a file is moved into its watched directory, so each version is
    written elsewhere and renamed in (atomic on one file system): Envoy never reads half a file.
    """

    NAME = "okta_jwt"  # the HTTP filter's name, which is the resource's name
    WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"

    def __init__(self, workdir: Path, wasm: dict):
        self.directory = workdir / "ecds"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / f"{self.NAME}.json"
        self._staging = workdir / f".{self.NAME}.ecds.tmp"
        self._wasm = wasm  # the Wasm filter's typed_config; only its configuration changes
        self.version = 0

    def filter_entry(self) -> dict:
        """The `http_filters` entry that names this resource instead of embedding it."""
        source = {"path_config_source": {"path": str(self.path),
                                         "watched_directory": {"path": str(self.directory)}}}
        return {"name": self.NAME,
                "config_discovery": {"config_source": source, "type_urls": [self.WASM_TYPE]}}

    def write(self, filter_config: dict | str) -> int:
        """Publish a new version: a dict is the filter's JSON configuration, a str is taken
        as it is (to publish a configuration the filter must refuse). Returns the version."""
        text = filter_config if isinstance(filter_config, str) else json.dumps(filter_config)
        self.version += 1
        wasm = json.loads(json.dumps(self._wasm))
        wasm["config"]["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                           "value": text}
        resource = {"@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
                    "name": self.NAME, "typed_config": wasm}
        self._staging.write_text(json.dumps({"version_info": str(self.version),
                                             "resources": [resource]}))
        os.replace(self._staging, self.path)
        return self.version

    def write_raw(self, text: str) -> None:
        """Publish bytes that are not a valid discovery response at all."""
        self.version += 1
        self._staging.write_text(text)
        os.replace(self._staging, self.path)


def _to_ecds(config: Path, workdir: Path, filter_config: dict) -> EcdsFile:
    """Rewrite the rendered bootstrap so the Wasm filter's configuration comes from an ECDS
    file, and write its first version. PyYAML is a test requirement, not the demo's."""
    import yaml

    bootstrap = yaml.safe_load(config.read_text())
    # File-based xDS needs a node identity, whatever its value.
    bootstrap.setdefault("node", {"id": "okta-jwt-test", "cluster": "okta-jwt-test"})
    filters = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
    http_filters = filters[0]["typed_config"]["http_filters"]
    ecds = EcdsFile(workdir, http_filters[0]["typed_config"])
    http_filters[0] = ecds.filter_entry()
    ecds.write(filter_config)
    config.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
    return ecds


def _with_vm_env(config: Path, vm_env: dict[str, str]) -> None:
    """Give the filter's Wasm VM these environment variables (Envoy
    `vm_config.environment_variables.key_values`), read by `{"env": NAME}` secrets."""
    import yaml

    bootstrap = yaml.safe_load(config.read_text())
    filters = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
    wasm = filters[0]["typed_config"]["http_filters"][0]["typed_config"]
    wasm["config"]["vm_config"]["environment_variables"] = {"key_values": dict(vm_env)}
    config.write_text(yaml.safe_dump(bootstrap, sort_keys=False))


def start_envoy(logdir: Path, variables: dict[str, str], filter_config: dict | None = None,
                name: str = "envoy", concurrency: int = 2,
                ecds: list[EcdsFile] | None = None,
                vm_env: dict[str, str] | None = None) -> Process:
    """Render the bootstrap into `logdir` and start Envoy; does not wait for readiness.

    Two workers so that per-process sharing (rate limits, JWKS refetches) is exercised. The
    access log is flushed every 100 ms (Envoy's default: 10 s), so that tests waiting for a
    request's line see it at once. With `ecds` (a list), the filter's configuration is served
    from an ECDS file instead of the bootstrap, and its `EcdsFile` is appended to the list.
    `vm_env` sets environment variables of the filter's Wasm VM.
    """
    config = logdir / f"{name}.yaml"
    render.render(config, variables, filter_config=filter_config)
    if vm_env:
        _with_vm_env(config, vm_env)
    if ecds is not None:
        ecds.append(_to_ecds(config, logdir, filter_config
                             if filter_config is not None
                             else render.load_filter_config(variables)))
    return Process(name, [envoy_bin(), "-c", config, "--disable-hot-restart",
                          "--concurrency", str(concurrency), "--log-level", "info",
                          "--file-flush-interval-msec", "100"], logdir)


def envoy_ready(admin_url: str, listen_port: int, host: str = "127.0.0.1") -> bool:
    return http_status(f"{admin_url}/ready") == 200 and port_open(host, listen_port)


def wait_envoy_ready(proc: Process, admin_url: str, listen_port: int,
                     timeout: float = 60.0) -> None:
    wait_until(lambda: envoy_ready(admin_url, listen_port), timeout,
               f"Envoy ({admin_url}/ready and port {listen_port})",
               interval=0.1, abort=proc.exit_reason)


def start_envoy_on_free_ports(start: Callable[[dict[str, int]], Process],
                              ports: dict[str, int], *, admin: str, ready: str,
                              attempts: int = 3) -> tuple[Process, dict[str, int]]:
    """Start an Envoy with `start(picked)` and wait until it is ready; return it and its ports.

    `ports` names the ports Envoy binds, 0 for "pick a free one"; `admin` and `ready` name its
    admin port and a listener port. A port picked free can be taken by another process before
    Envoy binds it: then, unless every port is fixed, Envoy is started again on new ones, up to
    `attempts` times in all.
    """
    for attempt in range(1, attempts + 1):
        picked = {name: port or free_port() for name, port in ports.items()}
        proc = start(picked)
        try:
            wait_envoy_ready(proc, f"http://127.0.0.1:{picked[admin]}", picked[ready])
            return proc, picked
        except HarnessError as e:
            proc.stop()
            raced = "Address already in use" in proc.output()
            if not raced or attempt == attempts or all(ports.values()):
                raise HarnessError(f"{e}\n{proc.tail()}") from None
        except BaseException:
            proc.stop()
            raise
    raise AssertionError("unreachable")


@dataclass
class Stack:
    envoy_url: str
    admin_url: str
    idp_url: str
    processes: dict[str, Process] = field(default_factory=dict)
    # With start_stack(ecds=True): the filter's configuration file, and the template
    # variables (IDP_URL, ...) a new configuration is built from.
    ecds: EcdsFile | None = None
    variables: dict[str, str] = field(default_factory=dict)

    @property
    def local(self) -> bool:
        """False when the tests run against a stack someone else started (compose)."""
        return bool(self.processes)

    def stop(self) -> None:
        for proc in reversed(list(self.processes.values())):
            proc.stop()


def start_stack(workdir: Path, *, envoy_port: int = 0, admin_port: int = 0,
                idp_port: int = 0, upstream_port: int = 0, concurrency: int = 2,
                attempts: int = 3,
                filter_config: Callable[[dict[str, str]], dict] | None = None,
                idp_args: Sequence[str] = (), idp_url: str | None = None,
                ecds: bool = False, vm_env: dict[str, str] | None = None) -> Stack:
    """Start mock IdP, echo upstream and Envoy; port 0 means "pick a free one".

    With `ecds`, the filter's configuration is an ECDS file (`Stack.ecds`) that a test can
    replace while Envoy runs. `vm_env`: environment variables of the filter's Wasm VM.

    `filter_config` maps the template variables (`IDP_URL`, ...) to the filter configuration
    (default: envoy/filter.json.tmpl). `idp_args` are extra `mock-idp` arguments. With
    `idp_url`, no IdP is started: Envoy uses the one at that URL, which the caller runs (or
    will start later, to test an IdP that is down), and `processes` has no "mock-idp".
    """
    workdir.mkdir(parents=True, exist_ok=True)
    started: list[Process] = []
    processes: dict[str, Process] = {}
    try:
        if idp_url is None:
            # Every authorization server the templates use is created (keys generated)
            # before Envoy starts: creating one lazily holds the IdP up for seconds.
            idp, idp_url = start_mock("mock-idp", workdir,
                                      ["--listen", f"127.0.0.1:{idp_port}",
                                       "--servers", IDP_SERVERS, *idp_args])
            started.append(idp)
            processes["mock-idp"] = idp
        echo, echo_url = start_mock("echo-upstream", workdir,
                                    ["--listen", f"127.0.0.1:{upstream_port}"])
        started.append(echo)
        processes["echo-upstream"] = echo

        ecds_files: list[EcdsFile] = []
        used: dict[str, str] = {}

        def envoy_on(ports: dict[str, int]) -> Process:
            variables = envoy_variables(listen_port=ports["listen"], admin_port=ports["admin"],
                                        idp_port=_port_of(idp_url),
                                        upstream_port=_port_of(echo_url))
            used.update(variables)
            ecds_files.clear()
            return start_envoy(workdir, variables, concurrency=concurrency,
                               filter_config=filter_config and filter_config(variables),
                               ecds=ecds_files if ecds else None, vm_env=vm_env)

        envoy, ports = start_envoy_on_free_ports(
            envoy_on, {"listen": envoy_port, "admin": admin_port}, admin="admin",
            ready="listen", attempts=attempts)
        processes["envoy"] = envoy
        return Stack(envoy_url=f"http://127.0.0.1:{ports['listen']}",
                     admin_url=f"http://127.0.0.1:{ports['admin']}",
                     idp_url=idp_url, processes=processes,
                     ecds=ecds_files[0] if ecds_files else None, variables=used)
    except BaseException:
        for proc in reversed(started):
            proc.stop()
        raise


_EXTERNAL = ("STACK_ENVOY_URL", "STACK_ADMIN_URL", "STACK_IDP_URL")


def external_urls() -> tuple[str, str, str] | None:
    """(envoy, admin, idp) URLs of a stack someone else runs, from the environment."""
    values = [os.environ.get(n, "").rstrip("/") for n in _EXTERNAL]
    if not any(values):
        return None
    if not all(values):
        raise HarnessError(f"set all of {', '.join(_EXTERNAL)} or none of them")
    return values[0], values[1], values[2]


def external_stack(timeout: float = 120.0) -> Stack | None:
    """The stack named by STACK_ENVOY_URL / STACK_ADMIN_URL / STACK_IDP_URL, once it answers.

    STACK_IDP_URL must be the IdP's public URL (the one its issuers are built from).
    """
    urls = external_urls()
    if urls is None:
        return None
    envoy_url, admin_url, idp_url = urls
    wait_until(lambda: http_status(f"{admin_url}/ready") == 200
               and http_status(f"{idp_url}/oauth2/default/.well-known/openid-configuration") == 200,
               timeout, f"the external stack ({admin_url}/ready and {idp_url})", interval=0.5)
    return Stack(envoy_url=envoy_url, admin_url=admin_url, idp_url=idp_url)


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].rstrip("/"))
