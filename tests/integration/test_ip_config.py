"""`ip`, `count` and `client_ip` in the schema and in the filter's validator (issue 17).

The address syntax is where a regular expression and a parser most easily disagree, so every
case here goes to both (`schema/config.schema.json` and `okta-jwt validate`), which must give
the verdict the case was written to have. The one rule the schema cannot express, that a
range has no bits set past its prefix, is checked separately: the filter refuses such a
range, the schema lets it through (docs/configuration.md, "What the schema cannot check").
"""

from __future__ import annotations

import pytest

from test_schema import minimal_provider, needs_cli, okta_jwt, schema_errors  # noqa: F401

VALID_RANGES = [
    "10.0.0.0/8", "10.1.2.3", "10.1.2.3/32", "0.0.0.0/0", "255.255.255.255", "192.168.0.0/16",
    "::", "::/0", "::1", "::1/128", "2001:db8::/32", "2001:DB8::/32", "2001:0db8:0000::/48",
    "fe80::/10", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7::", "1::", "::ffff:10.0.0.0/104",
    "::ffff:10.1.2.3", "::10.1.2.3", "1:2:3:4:5:6:10.1.2.3", "1::10.1.2.3", "64:ff9b::/96",
]
INVALID_RANGES = [
    "", " 10.0.0.0/8", "10.0.0.0/8 ", "10.0.0.0 /8", "/8", "10.0.0.0/", "10.0.0.0/33",
    "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/08", "10.0.0.0/8/8", "10.0.0", "10.0.0.0.0",
    "010.0.0.0/8", "0x0a.0.0.0/8", "10.0.0.256", "1e1.0.0.0", "fe80::1%eth0", "[::1]",
    "[::1]/128", "10.0.0.1:80", "localhost", "2001:db8:::/48", "2001:db8::g", "::/129",
    "::/1000", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7::8", "12345::", "::ffff:10.0.0.01",
    "1:2:3:4:5:6:7:10.1.2.3", "10.0.0.0/8\n", "::1\n", "*", "any",
]
HOST_BITS = ["10.1.0.0/8", "10.0.0.1/31", "2001:db8::1/32", "::ffff:10.1.0.0/104"]


def config_with(rule: dict | None = None, **top) -> dict:
    return {"providers": {"okta": minimal_provider()},
            "rules": [rule] if rule is not None else [], **top}


CASES = (
    [(f"allow {r!r}", config_with({"ip": {"allow": [r]}}), True) for r in VALID_RANGES]
    + [(f"deny {r!r}", config_with({"ip": {"deny": [r]}}), False) for r in INVALID_RANGES]
    + [
        ("allow and deny", config_with({"ip": {"allow": ["10.0.0.0/8"], "deny": ["::1"]}}), True),
        ("ip with neither list", config_with({"ip": {}}), False),
        ("empty allow", config_with({"ip": {"allow": []}}), False),
        ("empty deny beside allow", config_with({"ip": {"allow": ["::1"], "deny": []}}), False),
        ("unknown ip field", config_with({"ip": {"allow": ["::1"], "except": ["::2"]}}), False),
        ("ip not an object", config_with({"ip": ["10.0.0.0/8"]}), False),
        ("a range not a string", config_with({"ip": {"allow": [167772160]}}), False),
        ("1024 ranges", config_with({"ip": {"deny": [f"10.{i // 256}.{i % 256}.0/24"
                                                     for i in range(1024)]}}), True),
        ("1025 ranges", config_with({"ip": {"deny": [f"10.{i // 256}.{i % 256}.0/24"
                                                     for i in range(1025)]}}), False),
        ("ip on auth none", config_with({"auth": "none", "ip": {"allow": ["::1"]}}), True),
        ("client_ip 1", config_with(client_ip={"xff_trusted_hops": 1}), True),
        ("client_ip 32", config_with(client_ip={"xff_trusted_hops": 32}), True),
        ("client_ip 33", config_with(client_ip={"xff_trusted_hops": 33}), False),
        ("client_ip 0", config_with(client_ip={"xff_trusted_hops": 0}), False),
        ("client_ip string", config_with(client_ip={"xff_trusted_hops": "1"}), False),
        ("client_ip empty", config_with(client_ip={}), False),
        ("client_ip extra field", config_with(client_ip={"xff_trusted_hops": 1,
                                                         "header": "x-real-ip"}), False),
    ]
    + [(f"count {count} key {key} auth {auth}",
        config_with({"auth": auth, "rate_limits": [{"key": key, "requests": 5, "per_s": 60,
                                                    "count": count}]}),
        not (count == "denied" and (key.startswith("claim:") or auth == "none")))
       for count in ("all", "denied") for key in ("ip", "route", "header:x-k", "claim:sub")
       for auth in ("required", "optional", "none")]
    + [("count unknown", config_with({"rate_limits": [{"key": "ip", "requests": 5, "per_s": 60,
                                                       "count": "failed"}]}), False),
       ("count denied beside a claim limit", config_with(
           {"rate_limits": [{"key": "claim:sub", "requests": 5, "per_s": 60},
                            {"key": "ip", "requests": 5, "per_s": 60, "count": "denied"}]}), True)]
)


@needs_cli
@pytest.mark.parametrize("config, valid", [pytest.param(c, v, id=i) for i, c, v in CASES])
def test_schema_and_filter_agree(config, valid, okta_jwt):  # noqa: F811
    schema = schema_errors(config)
    verdict = okta_jwt.check(config)
    assert (not schema) == verdict.ok, (schema, verdict.stderr)
    assert verdict.ok == valid, (schema, verdict.stderr)
    if not verdict.ok:
        assert verdict.field.startswith(("rules[0].ip", "rules[0].rate_limits", "client_ip")), \
            verdict.stderr


@needs_cli
@pytest.mark.parametrize("cidr", HOST_BITS)
def test_bits_past_the_prefix_are_refused_by_the_filter_only(cidr, okta_jwt):  # noqa: F811
    config = config_with({"ip": {"allow": [cidr]}})
    assert not schema_errors(config)
    verdict = okta_jwt.check(config)
    assert not verdict.ok
    assert verdict.field == "rules[0].ip.allow[0]", verdict.stderr
    assert "bits set past the prefix" in verdict.stderr
