"""Certificate-bound tokens (RFC 8705) on real Envoy (issue 14; SPEC.md "Sender-constrained
tokens").

An Envoy of this module's own whose listener is TLS and requires a client certificate (the
shared bootstrap with a `DownstreamTlsContext` added to its filter chain). A CA, a server
certificate for 127.0.0.1 and two client certificates are made here with `cryptography`. A
token bound to one client certificate (`cnf["x5t#S256"]`, base64url of the SHA-256 of its
DER) is accepted over a connection that presented it, and refused over one that presented the
other; `mtls_binding: "required"` refuses unbound tokens. DPoP over this listener compares
`htu` with `https`, which the connection, not a header, chose.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import ipaddress
import json
import ssl
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

import harness
import render
from assertions import CHALLENGE_INVALID_TOKEN, assert_allowed, assert_denied
from envoy_client import EnvoyClient, Reply, counter
from filter_config import filter_config
from idp_client import IdpClient

pytestmark = pytest.mark.local_only

CONFIG = filter_config(
    {"bound": {}, "strict": {"mtls_binding": "required"}, "dpop": {"dpop": "allowed"}},
    [{"match": {"prefix": f"/{name}"}, "providers": [name]}
     for name in ("bound", "strict", "dpop")])


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Pki:
    """A CA, a server certificate for 127.0.0.1 and client certificates, as PEM files."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "okta-jwt test CA")])
        self.ca_name = name
        self.ca = self._cert(name, self.ca_key.public_key(), ca=True)
        self.ca_pem = self._write("ca.pem", self.ca.public_bytes(serialization.Encoding.PEM))
        self.server = self.issue("server", ip="127.0.0.1")

    def _cert(self, subject, public_key, *, ca=False, ip=None):
        now = datetime.datetime.now(datetime.timezone.utc)
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.ca_name)
             .public_key(public_key).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ip:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
        return b.sign(self.ca_key, hashes.SHA256())

    def _write(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        path.write_bytes(data)
        return path

    def issue(self, cn: str, ip: str | None = None) -> dict:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]),
                          key.public_key(), ip=ip)
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        der = cert.public_bytes(serialization.Encoding.DER)
        return {"cert": self._write(f"{cn}.pem", cert.public_bytes(serialization.Encoding.PEM)),
                "key": self._write(f"{cn}.key", key_pem),
                "x5t": b64url(hashlib.sha256(der).digest())}


def with_tls(bootstrap: str, pki: Pki) -> str:
    """The shared bootstrap with a TLS listener that requires a client certificate."""
    head = "    filter_chains:\n    - filters:\n"
    assert bootstrap.count(head) == 1, "the listener's filter chain of envoy.yaml.tmpl changed"
    tls = (
        "    filter_chains:\n"
        "    - transport_socket:\n"
        "        name: envoy.transport_sockets.tls\n"
        "        typed_config:\n"
        '          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.'
        "DownstreamTlsContext\n"
        "          require_client_certificate: true\n"
        "          common_tls_context:\n"
        "            tls_certificates:\n"
        f"            - certificate_chain: {{ filename: \"{pki.server['cert']}\" }}\n"
        f"              private_key: {{ filename: \"{pki.server['key']}\" }}\n"
        "            validation_context:\n"
        f"              trusted_ca: {{ filename: \"{pki.ca_pem}\" }}\n"
        "      filters:\n")
    return bootstrap.replace(head, tls)


class Stack:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.processes: list[harness.Process] = []
        self.pki = Pki(workdir)
        idp, self.idp_url = harness.start_mock("mock-idp", workdir,
                                               ["--listen", "127.0.0.1:0", "--servers", "default"])
        self.processes.append(idp)
        echo, echo_url = harness.start_mock("echo-upstream", workdir, ["--listen", "127.0.0.1:0"])
        self.processes.append(echo)

        def start(ports: dict[str, int]) -> harness.Process:
            variables = harness.envoy_variables(
                listen_port=ports["listen"], admin_port=ports["admin"],
                idp_port=harness._port_of(self.idp_url), upstream_port=harness._port_of(echo_url))
            path = workdir / "envoy-mtls.yaml"
            path.write_text(with_tls(render.envoy_config(variables, CONFIG(variables)), self.pki))
            return harness.Process("envoy-mtls", [
                harness.envoy_bin(), "-c", path, "--disable-hot-restart", "--concurrency", "2",
                "--log-level", "info", "--file-flush-interval-msec", "100"], workdir)

        proc, self.ports = harness.start_envoy_on_free_ports(
            start, {"listen": 0, "admin": 0}, admin="admin", ready="listen")
        self.processes.append(proc)
        self.admin = EnvoyClient(f"https://127.0.0.1:{self.ports['listen']}",
                                 f"http://127.0.0.1:{self.ports['admin']}")
        self.idp = IdpClient(self.idp_url)
        self.alice = self.pki.issue("alice")
        self.bob = self.pki.issue("bob")

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()

    def get(self, client: dict, path: str, headers: list[tuple[str, str]]) -> Reply:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_pem))
        ctx.load_cert_chain(str(client["cert"]), str(client["key"]))
        conn = http.client.HTTPSConnection("127.0.0.1", self.ports["listen"], context=ctx,
                                           timeout=20)
        try:
            conn.putrequest("GET", path, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders()
            resp = conn.getresponse()
            return Reply(resp.status, [(k.lower(), v) for k, v in resp.getheaders()], resp.read())
        finally:
            conn.close()

    def denied(self, reason: str) -> int:
        return counter(self.admin.stats(), f"okta_jwt_denied_{reason}")


@pytest.fixture(scope="module")
def s(tmp_path_factory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("mtls"))
    try:
        yield stack
    finally:
        stack.stop()


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def assert_mismatch(s: Stack, reply: Reply, before: int, token: str) -> None:
    assert_denied(reply, 401, challenge=CHALLENGE_INVALID_TOKEN, error="invalid_token",
                  token=token)
    assert s.denied("certificate_mismatch") == before + 1


def test_a_token_bound_to_the_presented_certificate_is_accepted(s):
    token = s.idp.mint({"cnf": {"x5t#S256": s.alice["x5t"]}})
    assert_allowed(s.get(s.alice, "/bound", bearer(token)))
    assert_allowed(s.get(s.alice, "/strict", bearer(token)))


def test_a_token_bound_to_another_certificate_is_refused(s):
    token = s.idp.mint({"cnf": {"x5t#S256": s.alice["x5t"]}})
    for path in ("/bound", "/strict"):
        before = s.denied("certificate_mismatch")
        assert_mismatch(s, s.get(s.bob, path, bearer(token)), before, token)
    # A thumbprint in another form (hex, padded) is not the same thumbprint.
    raw = base64.urlsafe_b64decode(s.alice["x5t"] + "=")
    for other in (raw.hex(), s.alice["x5t"] + "="):
        token = s.idp.mint({"cnf": {"x5t#S256": other}})
        before = s.denied("certificate_mismatch")
        assert_mismatch(s, s.get(s.alice, "/bound", bearer(token)), before, token)


def test_mtls_binding_required_refuses_unbound_tokens(s):
    token = s.idp.mint()
    assert_allowed(s.get(s.alice, "/bound", bearer(token)))
    before = s.denied("certificate_mismatch")
    assert_mismatch(s, s.get(s.alice, "/strict", bearer(token)), before, token)


def test_dpop_over_tls_names_https_as_the_connection_chose(s):
    key = ec.generate_private_key(ec.SECP256R1())
    nums = key.public_key().public_numbers()
    jwk = {"crv": "P-256", "kty": "EC", "x": b64url(nums.x.to_bytes(32, "big")),
           "y": b64url(nums.y.to_bytes(32, "big"))}
    jkt = b64url(hashlib.sha256(json.dumps(jwk, separators=(",", ":"),
                                           sort_keys=True).encode()).digest())
    token = s.idp.mint({"cnf": {"jkt": jkt}})

    def proof(scheme: str) -> str:
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}
        claims = {"htm": "GET", "htu": f"{scheme}://127.0.0.1:{s.ports['listen']}/dpop/d",
                  "iat": int(time.time()), "jti": str(uuid.uuid4()),
                  "ath": b64url(hashlib.sha256(token.encode()).digest())}
        signing_input = (b64url(json.dumps(header).encode()) + "."
                         + b64url(json.dumps(claims).encode()))
        r, sig_s = decode_dss_signature(key.sign(signing_input.encode(),
                                                 ec.ECDSA(hashes.SHA256())))
        return signing_input + "." + b64url(r.to_bytes(32, "big") + sig_s.to_bytes(32, "big"))

    dpop = [("authorization", f"DPoP {token}")]
    assert_allowed(s.get(s.alice, "/dpop/d", dpop + [("dpop", proof("https"))]))
    reply = s.get(s.alice, "/dpop/d", dpop + [("dpop", proof("http")),
                                               ("x-forwarded-proto", "http")])
    assert reply.status == 401 and reply.json()["error"] == "invalid_dpop_proof", reply
