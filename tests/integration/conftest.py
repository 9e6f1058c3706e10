"""Fixtures: one session-wide stack (mock IdP + echo upstream + Envoy with the filter), or
the already-running stack named by STACK_ENVOY_URL / STACK_IDP_URL / STACK_ADMIN_URL."""

from __future__ import annotations

import signal
import sys
import uuid

import pytest

import harness
from envoy_client import EnvoyClient
from idp_client import IdpClient


def pytest_configure(config):
    config.addinivalue_line("markers", "local_only: starts its own processes or reads "
                                       "their logs, so it cannot run against an external stack")
    config.addinivalue_line("markers", "slow: waits out real cache lifetimes (tens of "
                                       "seconds); deselect with -m 'not slow'")
    # A plain SIGTERM would skip atexit; turn it into an exit so children are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


def pytest_report_header(config):
    urls = harness.external_urls()
    return f"stack: {'external, Envoy at ' + urls[0] if urls else 'started by the suite'}"


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    external = harness.external_stack()
    if external is not None:
        yield external
        return
    stack = harness.start_stack(tmp_path_factory.mktemp("stack"))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def envoy(stack) -> EnvoyClient:
    """Requests through the session stack's Envoy, and its admin stats."""
    return EnvoyClient(stack.envoy_url, stack.admin_url)


@pytest.fixture(scope="session")
def idp(stack) -> IdpClient:
    """The session stack's mock IdP: tokens, request counts, faults."""
    return IdpClient(stack.idp_url)


@pytest.fixture
def envoy_proc(stack) -> harness.Process:
    """The session's Envoy process (for its log); tests using it are marked local_only."""
    return stack.processes["envoy"]


@pytest.fixture
def unique() -> str:
    """A fresh value for subjects, request ids and rate-limit keys."""
    return uuid.uuid4().hex[:12]


def pytest_collection_modifyitems(config, items):
    if harness.external_urls() is None:
        return
    skip = pytest.mark.skip(reason="needs its own processes or their logs; the stack is external")
    for item in items:
        if "local_only" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    item.stash[_FIRST_PROCESS] = len(harness.STARTED)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    # The session stack's processes, and any this test started itself.
    first = item.stash.get(_FIRST_PROCESS, 0)
    for i, proc in enumerate(harness.STARTED):
        if proc.alive or i >= first:
            report.sections.append((f"{proc.name} output", proc.tail()))


_FIRST_PROCESS = pytest.StashKey[int]()
