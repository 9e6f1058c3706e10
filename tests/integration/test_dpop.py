"""DPoP (RFC 9449) on real Envoy (issue 14; SPEC.md "Sender-constrained tokens", Responses).

A stack of this module's own, four workers, one provider per `dpop` mode. Proofs are signed
here (ES256, `cryptography`); tokens are minted by the mock IdP with the `cnf.jkt` each test
chooses. Every refusal of a proof is 401 `invalid_dpop_proof` with a `DPoP` challenge; bad
bindings are 401 `invalid_token`; one proof sent many times at once is admitted exactly once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

import harness
from assertions import CHALLENGE_INVALID_TOKEN, assert_allowed, assert_denied
from envoy_client import EnvoyClient, connections_per_worker, counter, workers_used
from filter_config import REALM, filter_config
from idp_client import IdpClient

pytestmark = pytest.mark.local_only

WORKERS = 4
ALGS = "RS256 PS256 ES256 EdDSA"  # the default dpop_algorithms, in the filter's order
ORIGIN = "https://api.example.com"
PROVIDERS = {
    "allowed": {"dpop": "allowed"},
    "required": {"dpop": "required"},
    "disabled": {},
    "origin": {"dpop": "allowed", "dpop_origin": ORIGIN},
    "fwd": {"dpop": "allowed", "forward_token": True},
    "short": {"dpop": "allowed", "dpop_max_age_s": 30, "dpop_algorithms": ["ES256"]},
    "full": {"dpop": "allowed", "dpop_max_age_s": 60},
}
# The replay record's shape (src/core/token/replay.rs): a jti's SHA-256 picks one of GROUPS
# groups of SLOTS entries.
GROUPS, SLOTS = 256, 32
CONFIG = filter_config(PROVIDERS, [{"match": {"prefix": f"/{name}"}, "providers": [name]}
                                   for name in PROVIDERS])

PROOF_CHALLENGE = re.compile(rf'DPoP realm="{REALM}", error="invalid_dpop_proof", algs="([^"]+)"')


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(jwk: dict) -> str:
    """RFC 7638: SHA-256 of the required members, sorted, without whitespace. (The test JWKs
    hold only their required members.)"""
    canonical = json.dumps(jwk, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


class Holder:
    """A client's DPoP key: its public JWK, RFC 7638 thumbprint, and proofs it signs."""

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        nums = self.key.public_key().public_numbers()
        self.jwk = {"kty": "EC", "crv": "P-256", "x": b64url(nums.x.to_bytes(32, "big")),
                    "y": b64url(nums.y.to_bytes(32, "big"))}
        self.jkt = thumbprint(self.jwk)

    def sign(self, header: dict, claims: dict) -> str:
        signing_input = (b64url(json.dumps(header).encode()) + "."
                         + b64url(json.dumps(claims).encode()))
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(),
                                                  ec.ECDSA(hashes.SHA256())))
        return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def proof(self, method: str, url: str, token: str | None, *, header: dict | None = None,
              **claims) -> str:
        h = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk, **(header or {})}
        c = {"htm": method, "htu": url, "iat": int(time.time()), "jti": str(uuid.uuid4())}
        if token is not None:
            c["ath"] = b64url(hashlib.sha256(token.encode()).digest())
        c.update(claims)
        return self.sign(h, {k: v for k, v in c.items() if v is not None})


class EdHolder(Holder):
    """The same with an Ed25519 key (EdDSA proofs, verified by the pure-Rust path)."""

    def __init__(self):
        self.key = ed25519.Ed25519PrivateKey.generate()
        raw = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
        self.jkt = thumbprint(self.jwk)

    def sign(self, header: dict, claims: dict) -> str:
        signing_input = (b64url(json.dumps(header).encode()) + "."
                         + b64url(json.dumps(claims).encode()))
        return signing_input + "." + b64url(self.key.sign(signing_input.encode()))


class Stack:
    def __init__(self, workdir: Path):
        self.stack = harness.start_stack(workdir, concurrency=WORKERS, filter_config=CONFIG)
        self.envoy = EnvoyClient(self.stack.envoy_url, self.stack.admin_url)
        self.idp = IdpClient(self.stack.idp_url)

    def url(self, path: str) -> str:
        return self.stack.envoy_url + path

    def send(self, path: str, token: str | None, proof: str | list[str] | None,
             scheme: str = "DPoP", method: str = "GET", extra=()):
        headers = list(extra)
        if token is not None:
            headers.append(("authorization", f"{scheme} {token}"))
        for p in ([proof] if isinstance(proof, str) else proof or []):
            headers.append(("dpop", p))
        return self.envoy.request(method, path, headers=headers)

    def denied(self, reason: str) -> int:
        return counter(self.envoy.stats(), f"okta_jwt_denied_{reason}")


@pytest.fixture(scope="module")
def s(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("dpop"))
    try:
        yield stack
    finally:
        stack.stack.stop()


@pytest.fixture
def holder() -> Holder:
    return Holder()


def assert_bad_proof(s: Stack, reply, token: str | None = None) -> None:
    assert_denied(reply, 401, challenge=PROOF_CHALLENGE, error="invalid_dpop_proof", token=token)


def test_a_valid_proof_is_admitted_and_neither_token_nor_proof_goes_upstream(s, holder):
    token = s.idp.mint({"cnf": {"jkt": holder.jkt}})
    proof = holder.proof("GET", s.url("/allowed/x"), token)
    seen = assert_allowed(s.send("/allowed/x?q=1", token, proof))
    names = {k.lower() for k in seen["headers"]}
    assert "authorization" not in names and "dpop" not in names, seen
    # The scheme is matched without regard to case; POST is a method like any other.
    proof = holder.proof("POST", s.url("/allowed/y"), token)
    assert_allowed(s.send("/allowed/y", token, proof, scheme="dpop", method="POST"))


class PsHolder(Holder):
    """The same with an RSA key signing PS256 (RSASSA-PSS, salt as long as the hash)."""

    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        nums = self.key.public_key().public_numbers()
        self.jwk = {"kty": "RSA", "e": b64url(nums.e.to_bytes(3, "big")),
                    "n": b64url(nums.n.to_bytes(256, "big"))}
        self.jkt = thumbprint(self.jwk)

    def sign(self, header: dict, claims: dict) -> str:
        signing_input = (b64url(json.dumps(header).encode()) + "."
                         + b64url(json.dumps(claims).encode()))
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        return signing_input + "." + b64url(self.key.sign(signing_input.encode(), pss,
                                                          hashes.SHA256()))


def test_a_ps256_proof_is_admitted(s):
    ps = PsHolder()
    token = s.idp.mint({"cnf": {"jkt": ps.jkt}})
    proof = ps.proof("GET", s.url("/allowed/ps"), token, header={"alg": "PS256"})
    assert_allowed(s.send("/allowed/ps", token, proof))
    other = ps.proof("POST", s.url("/allowed/ps"), token, header={"alg": "PS256"})
    assert_bad_proof(s, s.send("/allowed/ps", token, other), token)


def test_an_eddsa_proof_is_admitted(s):
    ed = EdHolder()
    token = s.idp.mint({"cnf": {"jkt": ed.jkt}})
    proof = ed.proof("GET", s.url("/allowed/ed"), token, header={"alg": "EdDSA"})
    assert_allowed(s.send("/allowed/ed", token, proof))
    tampered = ed.proof("GET", s.url("/allowed/ed"), token, header={"alg": "EdDSA"})
    tampered = tampered[:-6] + ("AAAAAA" if not tampered.endswith("AAAAAA") else "BBBBBB")
    assert_bad_proof(s, s.send("/allowed/ed", token, tampered), token)


def test_forward_token_keeps_the_proof(s, holder):
    token = s.idp.mint({"cnf": {"jkt": holder.jkt}})
    proof = holder.proof("GET", s.url("/fwd"), token)
    seen = assert_allowed(s.send("/fwd", token, proof))
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers.get("dpop") == proof


def test_one_proof_sent_many_times_at_once_is_admitted_exactly_once(s, holder):
    token = s.idp.mint({"cnf": {"jkt": holder.jkt}})
    rounds, copies = 5, 24
    spread = 0
    for _ in range(rounds):
        proof = holder.proof("GET", s.url("/allowed/replay"), token)
        headers = [[("authorization", f"DPoP {token}"), ("dpop", proof)]] * copies
        before = s.denied("invalid_dpop_proof")
        cx_before = connections_per_worker(s.envoy)
        statuses = s.envoy.send_many("GET", "/allowed/replay", headers, connections=copies)
        spread = max(spread, workers_used(cx_before, connections_per_worker(s.envoy)))
        assert sorted(statuses) == [200] + [401] * (copies - 1), statuses
        assert s.denied("invalid_dpop_proof") == before + copies - 1
    print(f"{rounds} rounds of {copies} copies: 1 admitted each time, up to {spread} workers")
    # The copies reached several workers, so the one record is what stopped them.
    assert spread >= 2, spread


def same_group_jtis(n: int) -> list[str]:
    """`n` jtis whose replay-record group is the same (bytes 8-16 of their SHA-256)."""
    group = lambda j: int.from_bytes(hashlib.sha256(j.encode()).digest()[8:16], "little") % GROUPS
    target, out = group("seed"), []
    for i in range(GROUPS * (n + 8) * 4):
        j = f"full-{uuid.uuid4()}"
        if group(j) == target:
            out.append(j)
            if len(out) == n:
                return out
    raise AssertionError("no jtis found")


def test_a_full_replay_record_answers_503_and_never_admits(s, holder):
    token = s.idp.mint({"cnf": {"jkt": holder.jkt}})
    jtis = same_group_jtis(SLOTS + 1)
    for j in jtis[:SLOTS]:
        assert_allowed(s.send("/full", token, holder.proof("GET", s.url("/full"), token, jti=j)))
    before = s.denied("dpop_replay_full")
    last = holder.proof("GET", s.url("/full"), token, jti=jtis[SLOTS])
    for _ in range(2):  # refused, so not recorded: refused the same way again
        reply = s.send("/full", token, last)
        assert_denied(reply, 503, error="temporarily_unavailable", token=token)
        assert 1 <= int(reply.header("retry-after")) <= 61, reply
    assert s.denied("dpop_replay_full") == before + 2
    # Proofs of other groups are not affected.
    assert_allowed(s.send("/full", token, holder.proof("GET", s.url("/full"), token)))


def test_a_refused_proof_does_not_record_its_jti(s, holder):
    token = s.idp.mint({"cnf": {"jkt": holder.jkt}})
    jti = str(uuid.uuid4())
    wrong = holder.proof("POST", s.url("/allowed/j"), token, jti=jti)
    assert_bad_proof(s, s.send("/allowed/j", token, wrong), token)
    right = holder.proof("GET", s.url("/allowed/j"), token, jti=jti)
    assert_allowed(s.send("/allowed/j", token, right))
    assert_bad_proof(s, s.send("/allowed/j", token, right), token)


def mismatches(s: Stack, holder: Holder, token: str) -> dict[str, str | list[str] | None]:
    url = s.url("/allowed/m")
    now = int(time.time())
    other = Holder()
    port = s.stack.envoy_url.rsplit(":", 1)[1]
    private = {**holder.jwk, "d": b64url(holder.key.private_numbers().private_value
                                         .to_bytes(32, "big"))}
    good = holder.proof("GET", url, token)
    big = holder.proof("GET", url, token, pad="x" * 9000)
    return {
        "missing": None,
        "two headers": [good, holder.proof("GET", url, token)],
        "joined": [good + "," + holder.proof("GET", url, token)],
        "too large": big,
        "not a jws": "not-a-jws",
        "htm": holder.proof("POST", url, token),
        "htu path": holder.proof("GET", s.url("/allowed/other"), token),
        "htu host": holder.proof("GET", f"http://localhost:{port}/allowed/m", token),
        "htu scheme": holder.proof("GET", f"https://127.0.0.1:{port}/allowed/m", token),
        "ath": holder.proof("GET", url, token + "x"),
        "no ath": holder.proof("GET", url, None),
        "iat old": holder.proof("GET", url, token, iat=now - 301),
        "iat future": holder.proof("GET", url, token, iat=now + 120),
        "no jti": holder.proof("GET", url, token, jti=None),
        "typ": holder.proof("GET", url, token, header={"typ": "JWT"}),
        "alg none": holder.proof("GET", url, token, header={"alg": "none"}),
        "alg HS256": holder.proof("GET", url, token, header={"alg": "HS256"}),
        "private jwk": holder.proof("GET", url, token, header={"jwk": private}),
        "other key": other.proof("GET", url, token),
        "bad signature": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
    }


def test_every_mismatched_proof_is_refused(s, holder):
    token = s.idp.mint({"cnf": {"jkt": holder.jkt}})
    cases = mismatches(s, holder, token)
    before = s.denied("invalid_dpop_proof")
    for name, proof in cases.items():
        reply = s.send("/allowed/m", token, proof)
        assert reply.status == 401, (name, reply)
        assert_bad_proof(s, reply, token)
        assert PROOF_CHALLENGE.fullmatch(reply.header("www-authenticate")).group(1) == ALGS
    assert s.denied("invalid_dpop_proof") == before + len(cases)
    # None of them spent the good proof's chance: a fresh one passes.
    assert_allowed(s.send("/allowed/m", token, holder.proof("GET", s.url("/allowed/m"), token)))


def test_x_forwarded_proto_never_chooses_the_scheme(s, holder):
    token = s.idp.mint({"cnf": {"jkt": holder.jkt}})
    port = s.stack.envoy_url.rsplit(":", 1)[1]
    proof = holder.proof("GET", f"https://127.0.0.1:{port}/allowed/p", token)
    assert_bad_proof(s, s.send("/allowed/p", token, proof,
                               extra=[("x-forwarded-proto", "https")]))
    # The connection is plain HTTP, so `http` it is, whatever the header says.
    proof = holder.proof("GET", s.url("/allowed/p"), token)
    assert_allowed(s.send("/allowed/p", token, proof, extra=[("x-forwarded-proto", "https")]))


def test_dpop_origin_replaces_scheme_and_authority(s, holder):
    token = s.idp.mint({"cnf": {"jkt": holder.jkt}})
    assert_allowed(s.send("/origin/a", token, holder.proof("GET", f"{ORIGIN}/origin/a", token)))
    # Default port and host case are normalized (RFC 3986 section 6.2.3).
    assert_allowed(s.send("/origin/a", token,
                          holder.proof("GET", "https://API.example.com:443/origin/a", token)))
    assert_bad_proof(s, s.send("/origin/a", token, holder.proof("GET", s.url("/origin/a"), token)))


def test_max_age_and_algorithms_are_per_provider(s, holder):
    token = s.idp.mint({"cnf": {"jkt": holder.jkt}})
    old = holder.proof("GET", s.url("/short"), token, iat=int(time.time()) - 60)
    reply = s.send("/short", token, old)
    assert_bad_proof(s, reply)
    assert PROOF_CHALLENGE.fullmatch(reply.header("www-authenticate")).group(1) == "ES256"
    assert_allowed(s.send("/short", token, holder.proof("GET", s.url("/short"), token)))


def test_bound_token_under_bearer_is_refused(s, holder):
    token = s.idp.mint({"cnf": {"jkt": holder.jkt}})
    for path in ("/allowed", "/required", "/disabled"):
        before = s.denied("dpop_bound_token")
        proof = holder.proof("GET", s.url(path), token)
        reply = s.send(path, token, proof, scheme="Bearer")
        assert reply.status == 401 and "invalid_token" in reply.header("www-authenticate"), reply
        assert reply.json()["error"] == "invalid_token"
        assert s.denied("dpop_bound_token") == before + 1, path


def test_unbound_token_under_dpop_is_refused(s, holder):
    token = s.idp.mint()
    before = s.denied("dpop_unbound_token")
    reply = s.send("/allowed", token, holder.proof("GET", s.url("/allowed"), token))
    assert reply.status == 401 and reply.json()["error"] == "invalid_token", reply
    assert s.denied("dpop_unbound_token") == before + 1
    # The same token as a Bearer token is fine where DPoP is only allowed...
    assert_allowed(s.send("/allowed", token, None, scheme="Bearer"))
    # ...and refused where it is required.
    reply = s.send("/required", token, None, scheme="Bearer")
    assert reply.status == 401 and reply.json()["error"] == "invalid_token", reply
    assert s.denied("dpop_unbound_token") == before + 2


def test_dpop_disabled_refuses_the_scheme(s, holder):
    token = s.idp.mint({"cnf": {"jkt": holder.jkt}})
    before = s.denied("dpop_disabled")
    reply = s.send("/disabled", token, holder.proof("GET", s.url("/disabled"), token))
    assert_denied(reply, 401, challenge=CHALLENGE_INVALID_TOKEN, error="invalid_token",
                  token=token)
    assert s.denied("dpop_disabled") == before + 1


def test_challenges_follow_the_rules_modes(s):
    assert s.send("/required", None, None).header_all("www-authenticate") == [
        f'DPoP realm="{REALM}", algs="{ALGS}"']
    assert s.send("/allowed", None, None).header_all("www-authenticate") == [
        f'Bearer realm="{REALM}"', f'DPoP realm="{REALM}", algs="{ALGS}"']
    assert s.send("/disabled", None, None).header_all("www-authenticate") == [
        f'Bearer realm="{REALM}"']
