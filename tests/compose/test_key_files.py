"""The IdP restarted with rotated key files: what an operator does on a real IdP, done to
the mock IdP's key directory (its volume, mounted from the host as IDP_KEYS_DIR).

mock-idp --key-dir loads `{server}-1.pem` (the newest, signing key) and `{server}-2.pem`,
and generates a missing one. Rotation on disk: the current key moves to slot 2 (the old
slot-2 key is dropped), slot 1 is left empty for a new key."""

from __future__ import annotations

import time

import pytest

from conftest import wait_envoy_reaches, wait_until

pytestmark = pytest.mark.host

SERVER = "rotation"
# Ten of the filter's 50 ms ticks: every worker has looked at the shared key record by then.
TICKS_TO_ADOPT_S = 0.5


def test_idp_restarted_with_rotated_key_files_new_key_accepted_on_first_request(stack, engine):
    envoy_started = engine.started_at("envoy")
    current, previous = stack.kids(SERVER)
    on_current = stack.mint(SERVER)
    assert stack.get("/rotation", on_current).status_code == 200
    # Signed with the key the rotation drops; never sent before the rotation.
    on_dropped = stack.mint(SERVER, signing_key=previous)
    slot1, slot2 = engine.keys_dir / f"{SERVER}-1.pem", engine.keys_dir / f"{SERVER}-2.pem"
    assert slot1.is_file() and slot2.is_file(), sorted(p.name for p in engine.keys_dir.iterdir())

    engine.stop("mock-idp")
    try:
        slot1.replace(slot2)
    finally:
        engine.start("mock-idp")
    wait_until("the IdP to answer again", stack.idp_answers)

    kids = stack.kids(SERVER)
    assert kids[1] == current, "the former signing key, moved to slot 2, is still published"
    assert kids[0] not in (current, previous), "a new key was generated for slot 1"
    assert slot1.is_file(), "the new key was saved to its file"

    # Envoy only knows the old set. The first request with the new key must pass: the
    # unknown kid makes the filter refetch and the request waits for it. (First make sure
    # Envoy resolves mock-idp to the restarted container, which may have a new address.)
    wait_envoy_reaches(stack, engine, "mock-idp", "okta_idp")
    on_new = stack.mint(SERVER)
    r = stack.get("/rotation", on_new)
    assert r.status_code == 200, r.text
    # The refetched set replaced the old one: the dropped key no longer verifies, the
    # former signing key still does. Envoy's other workers adopt the new set from shared
    # data on their next tick (50 ms), so until then the dropped key's token may pass on one
    # of them; a run of refusals inside that tick proves nothing about the other workers.
    # So: refused 8 times in a row, then 10 tick periods later refused 20 times in a row.
    wait_until("the dropped key to stop verifying on Envoy's workers",
               lambda: all(stack.get("/rotation", on_dropped).status_code == 401
                           for _ in range(8)), timeout_s=15)
    time.sleep(TICKS_TO_ADOPT_S)
    for _ in range(20):
        r = stack.get("/rotation", on_dropped)
        assert r.status_code == 401, r.text
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert stack.get("/rotation", stack.mint(SERVER, signing_key=current)).status_code == 200
    assert engine.started_at("envoy") == envoy_started, "Envoy was restarted"
