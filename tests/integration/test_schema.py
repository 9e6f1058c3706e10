"""schema/config.schema.json against the filter's own configuration check (issue 11).

- The schema is a valid JSON Schema (draft 2020-12); its defaults fit their own fields; every
  field it accepts is documented in docs/configuration.md.
- Every example configuration in the repository passes both the schema and the filter's
  validator (`okta-jwt validate`, the filter's parser compiled natively, built by `make cli`):
  the JSON blocks of README.md and docs/*.md, the filter templates under envoy/, and the
  configurations the integration tests build.
- On a corpus of configurations (a generator of single-field variations around several valid
  bases, random combinations of them, and hand-written cases) the schema and the filter give
  the same verdict, and the verdict each case was written to have. The rules JSON Schema cannot
  express are listed in NOT_EXPRESSIBLE; their cases assert the documented difference instead
  (so a change on either side shows up).

Markdown code blocks: "```json" is a complete configuration; "```json <name>" is a fragment
checked against `$defs/<name>` of the schema (and, for provider, rule and rate_limit, by the
filter too, wrapped in a minimal configuration); "```json body" is any JSON (responses, token
payloads) and must only parse.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import re
import subprocess
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from jsonschema import Draft202012Validator

import harness
import render  # envoy/render.py, importable once harness is

REPO = harness.REPO
SCHEMA_PATH = REPO / "schema" / "config.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text())
VALIDATOR = Draft202012Validator(SCHEMA)
CLI_BUILD_TIMEOUT_S = 1800
CLI_RUN_TIMEOUT_S = 30

# --- contract fixes not in the filter yet -------------------------------------------------
# A case that relies on one is xfail(strict=True), so it fails ("XPASS strict") the moment
# the fix lands and the entry is removed. None is pending now: the issuer and
# path_parameters fixes have landed.
PENDING: list[tuple[str, Any]] = []


def pending_fixes(config: Any) -> list[str]:
    """The pending contract fixes a configuration relies on."""
    return [reason for reason, relies in PENDING if relies(config)]


def pending_marks(config: Any) -> list:
    return [pytest.mark.xfail(strict=True, reason=r) for r in pending_fixes(config)]


# --- the two validators --------------------------------------------------------------------

def schema_errors(instance: Any, definition: str | None = None) -> list[str]:
    """Schema errors of `instance` against the whole schema, or against `$defs/<definition>`."""
    validator = VALIDATOR
    if definition is not None:
        validator = Draft202012Validator({"$defs": SCHEMA["$defs"],
                                          "$ref": f"#/$defs/{definition}"})
    return [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in validator.iter_errors(instance)]


@dataclass
class Verdict:
    ok: bool
    stdout: str
    stderr: str

    @property
    def field(self) -> str:
        """The field the first error names (`field: problem`), "" when it names none."""
        line = self.stderr.strip().splitlines()[0] if self.stderr.strip() else ""
        m = re.match(r"([A-Za-z0-9_$\[\].-]+): ", line)
        return m.group(1) if m else ""


class FilterValidator:
    """`okta-jwt validate`: the filter's configuration parser, compiled natively."""

    def __init__(self, binary: Path, workdir: Path):
        self.binary = binary
        self.workdir = workdir
        self.count = 0

    def check(self, config: Any = None, raw: bytes | None = None) -> Verdict:
        self.count += 1
        path = self.workdir / f"config-{self.count}.json"
        path.write_bytes(raw if raw is not None else json.dumps(config).encode())
        r = subprocess.run([str(self.binary), "validate", str(path)], capture_output=True,
                           text=True, timeout=CLI_RUN_TIMEOUT_S)
        assert r.returncode in (0, 1), f"okta-jwt validate exited {r.returncode}: {r.stderr}"
        verdict = Verdict(ok=r.returncode == 0, stdout=r.stdout, stderr=r.stderr)
        if verdict.ok:
            assert r.stdout.strip() == "ok" and not r.stderr, r
        else:
            assert r.stderr.strip(), "refused without saying why"
        return verdict


@pytest.fixture(scope="session")
def okta_jwt(tmp_path_factory) -> FilterValidator:
    """`make cli` once per session, then the validator it builds."""
    r = subprocess.run(["make", "--no-print-directory", "cli"], cwd=REPO, capture_output=True,
                       text=True, timeout=CLI_BUILD_TIMEOUT_S)
    assert r.returncode == 0, f"make cli failed:\n{r.stdout}\n{r.stderr}"
    binary = REPO / os.environ.get("CARGO_TARGET_DIR", "target") / "release" / "okta-jwt"
    assert binary.is_file(), f"make cli did not produce {binary}"
    return FilterValidator(binary, tmp_path_factory.mktemp("okta-jwt-validate"))


# Tests that build and run okta-jwt cannot run where only the stack is (compose's test
# container has no cargo): conftest.py skips `local_only` tests against an external stack.
needs_cli = pytest.mark.local_only


def assert_accepted_by_both(config: Any, okta_jwt: FilterValidator, where: str) -> None:
    errors = schema_errors(config)
    verdict = okta_jwt.check(config)
    assert not errors, f"{where}: the schema refuses it: {errors}"
    assert verdict.ok, f"{where}: the filter refuses it: {verdict.stderr.strip()}"


# --- shared inputs -----------------------------------------------------------------------

# The RSA public key of RFC 7515 appendix A.2: a real 2048-bit key, public by design.
RFC7515_A2_N = (
    "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d"
    "4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rex"
    "MdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFv"
    "UK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ")
RFC_KEY = {"kty": "RSA", "kid": "rfc7515-a2", "alg": "RS256", "use": "sig", "e": "AQAB",
           "n": RFC7515_A2_N}
JWKS = {"keys": [RFC_KEY]}
TEMPLATE_VARIABLES = {"IDP_URL": "http://127.0.0.1:8080", "ISSUER": "https://issuer.example",
                      "JWKS": json.dumps(JWKS)}


# --- the schema itself ---------------------------------------------------------------------

def test_the_schema_is_a_valid_draft_2020_12_schema():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def _subschemas(node: Any, path: str = "#") -> Iterator[tuple[str, dict]]:
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _subschemas(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _subschemas(v, f"{path}/{i}")


def _object_schemas() -> list[tuple[str, dict]]:
    return [(p, s) for p, s in _subschemas(SCHEMA) if s.get("type") == "object"]


def test_every_object_refuses_unknown_fields_except_jwks_documents():
    # A JWK Set and its keys are IdP documents: unknown members there are ignored, as the
    # filter ignores them. Everything an operator writes is closed.
    open_ok = {"#/$defs/jwk_set"}
    for path, s in _object_schemas():
        if path in open_ok:
            assert "additionalProperties" not in s, path
            continue
        if "properties" in s:
            assert s.get("additionalProperties") is False, f"{path} accepts unknown fields"


def test_every_field_has_a_description_or_a_described_reference():
    missing = []
    for path, s in _object_schemas():
        for name, prop in s.get("properties", {}).items():
            if "description" in prop:
                continue
            ref = prop.get("$ref") or prop.get("items", {}).get("$ref")
            target = SCHEMA["$defs"].get(ref.rsplit("/", 1)[1]) if ref else None
            if target and "description" in target:
                continue
            missing.append(f"{path}/{name}")
    assert not missing, missing


def test_defaults_fit_their_own_fields():
    checked = 0
    for path, s in _subschemas(SCHEMA):
        if "default" in s:
            errors = list(Draft202012Validator({"$defs": SCHEMA["$defs"], **s})
                          .iter_errors(s["default"]))
            assert not errors, f"{path}: default {s['default']!r}: {errors[0].message}"
            checked += 1
    assert checked >= 15


def test_every_field_is_documented_in_configuration_md():
    doc = (REPO / "docs" / "configuration.md").read_text()
    names = set()
    for path, s in _object_schemas():
        if path.startswith("#/$defs/jwk_set"):
            continue
        names.update(s.get("properties", {}))
    missing = sorted(n for n in names if f"`{n}`" not in doc)
    assert not missing, f"fields of the schema not in docs/configuration.md: {missing}"


# --- examples in the repository -----------------------------------------------------------

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[A-Za-z0-9_+-]*)(?:[ \t]+(?P<info>\S+))?"
                    r"[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)


def markdown_blocks(path: Path) -> list[tuple[str, str, str, int]]:
    """(lang, info, body, line) of each fenced code block."""
    text = path.read_text()
    out = []
    for m in _FENCE.finditer(text):
        indent = m.group("indent")
        body = "".join(line[len(indent):] if line.startswith(indent) else line
                       for line in m.group("body").splitlines(keepends=True))
        out.append((m.group("lang"), m.group("info") or "", body,
                    text.count("\n", 0, m.start()) + 1))
    return out


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


FRAGMENT_WRAPPERS: dict[str, Callable[[dict], dict]] = {
    "provider": lambda p: {"providers": {"okta": p}},
    "rule": lambda r: {"providers": {name: minimal_provider()
                                     for name in r.get("providers", ["okta"])},
                       "rules": [r]},
    "rate_limit": lambda l: {"providers": {"okta": minimal_provider()},
                             "rules": [{"rate_limits": [l]}]},
}


INTROSPECTION = {"uri": "https://x/introspect", "cluster": "okta_idp", "client_id": "a",
                 "client_secret": "b"}


def minimal_provider() -> dict:
    return {"issuer": "https://dev-123456.okta.com/oauth2/default",
            "audiences": ["api://default"],
            "jwks": {"uri": "https://dev-123456.okta.com/oauth2/default/v1/keys",
                     "cluster": "okta_idp"}}


def _markdown_json_params() -> list:
    params = []
    for path in markdown_files():
        for lang, info, body, line in markdown_blocks(path):
            if lang != "json":
                continue
            where = f"{path.relative_to(REPO)}:{line}"
            try:
                value = json.loads(body)
            except json.JSONDecodeError:
                value = None  # reported by the test, with the error
            checked = value
            if info in FRAGMENT_WRAPPERS and isinstance(value, dict):
                checked = FRAGMENT_WRAPPERS[info](value)
            marks = pending_marks(checked) if info in ("", *FRAGMENT_WRAPPERS) else []
            params.append(pytest.param(where, info, body, id=where, marks=marks))
    return params


MARKDOWN_JSON = _markdown_json_params()


def test_the_docs_have_json_examples():
    kinds = [p.values[1] for p in MARKDOWN_JSON]
    assert kinds.count("") >= 4, kinds  # complete configurations
    assert {"provider", "rule", "rate_limit", "body"} <= set(kinds), kinds


@needs_cli
@pytest.mark.parametrize("where, info, body", MARKDOWN_JSON)
def test_markdown_json_example(where, info, body, okta_jwt):
    try:
        value = json.loads(body)
    except json.JSONDecodeError as e:
        pytest.fail(f"{where}: not JSON: {e}")
    if info in ("body", "log"):  # a response body, a decision log line: JSON, not a config
        return
    if info == "":
        assert_accepted_by_both(value, okta_jwt, where)
        return
    assert info in SCHEMA["$defs"], f"{where}: unknown code block kind 'json {info}'"
    errors = schema_errors(value, info)
    assert not errors, f"{where}: $defs/{info} refuses it: {errors}"
    if info in FRAGMENT_WRAPPERS:
        wrapped = FRAGMENT_WRAPPERS[info](value)
        assert_accepted_by_both(wrapped, okta_jwt, f"{where} (wrapped)")


def template_configs() -> dict[str, dict]:
    """The filter configurations under envoy/, rendered as the stack and the bench do."""
    standard = render.load_filter_config(TEMPLATE_VARIABLES)
    bench = render.load_filter_config(TEMPLATE_VARIABLES, REPO / "envoy" / "bench-filter.json.tmpl")
    return {"envoy/filter.json.tmpl": standard,
            "envoy/bench-filter.json.tmpl": bench,
            "envoy/bench-filter.json.tmpl (pure)": {**bench, "signature_backend": "pure"}}


def test_every_filter_template_under_envoy_is_covered():
    covered = {name.split(" ")[0] for name in template_configs()}
    present = {f"envoy/{p.name}" for p in (REPO / "envoy").glob("*.json.tmpl")}
    assert present == covered, f"new filter templates to add to template_configs: {present - covered}"


@needs_cli
@pytest.mark.parametrize("name", list(template_configs()))
def test_envoy_filter_templates(name, okta_jwt):
    assert_accepted_by_both(template_configs()[name], okta_jwt, name)


# Configurations the integration tests build for their own stacks. Each entry names the test
# module and how to get its builder(s); a builder takes the template variables (IDP_URL ...).
def _test_built_configs() -> dict[str, Callable[[dict[str, str]], dict]]:
    import test_backends
    import test_jwks_lifecycle
    import test_ratelimit
    builders: dict[str, Callable[[dict[str, str]], dict]] = {
        "test_ratelimit.RATELIMIT_CONFIG": test_ratelimit.RATELIMIT_CONFIG,
        "test_backends.backend_config(auto)": test_backends.backend_config("auto"),
        "test_backends.backend_config(pure)": test_backends.backend_config("pure"),
    }
    # Every module-level provider table of the lifecycle tests (name -> {"server": ...}).
    tables = {name: value for name, value in vars(test_jwks_lifecycle).items()
              if isinstance(value, dict) and value
              and all(isinstance(v, dict) and "server" in v for v in value.values())}
    assert len(tables) >= 2, f"lifecycle provider tables not found: {sorted(tables)}"
    for name, table in tables.items():
        builders[f"test_jwks_lifecycle.lifecycle_config({name})"] = \
            test_jwks_lifecycle.lifecycle_config(table)
    return builders


@needs_cli
def test_configs_built_by_the_integration_tests(okta_jwt):
    built = _test_built_configs()
    for name, build in built.items():
        assert_accepted_by_both(build(TEMPLATE_VARIABLES), okta_jwt, name)


def _invalid_cases_of_test_config() -> list[tuple[str, Callable[[dict], None]]]:
    import test_config
    marks = [m for m in getattr(test_config.test_invalid_config_is_rejected, "pytestmark", [])
             if m.name == "parametrize"]
    assert marks, "test_config.test_invalid_config_is_rejected is no longer parametrized"
    cases = []
    for p in marks[0].args[1]:
        mutate = p.values[0] if hasattr(p, "values") else p[0]
        cases.append((getattr(p, "id", None) or repr(mutate), mutate))
    return cases


@needs_cli
def test_invalid_configs_of_test_config_are_refused_by_both(okta_jwt):
    cases = _invalid_cases_of_test_config()
    assert len(cases) >= 3
    for name, mutate in cases:
        config = render.load_filter_config(TEMPLATE_VARIABLES)
        mutate(config)
        assert schema_errors(config), f"{name}: the schema accepts it"
        assert not okta_jwt.check(config).ok, f"{name}: the filter accepts it"


# --- the agreement corpus ------------------------------------------------------------------

@dataclass(frozen=True)
class Gap:
    """A rule JSON Schema cannot express: which side refuses the cases that break it."""
    rule: str
    filter_ok: bool
    schema_ok: bool


NOT_EXPRESSIBLE = {
    "rule-providers": Gap("each name in a rule's `providers` must be a configured provider "
                          "(a cross-reference between rules and providers)", False, True),
    "equals-param": Gap("`equals_param` must name a parameter of the same rule's "
                        "`match.template` (a cross-reference inside a rule)", False, True),
    "template-unique": Gap("template parameter names are unique within a template", False, True),
    "usable-key": Gap("an inline JWK Set must hold at least one usable key (RSA 2048-8192 "
                      "bits, a supported curve, valid base64url, no private members)", False, True),
    "duplicate-field": Gap("a field appears at most once in an object (the filter refuses a "
                           "repeated field; JSON parsers keep one of the values)", False, True),
    "integer-spelling": Gap("integers are written without a fraction or an exponent (JSON "
                            "Schema treats 60.0 and 6e1 as the integer 60)", False, True),
    "size": Gap("the whole configuration is at most 1 MiB", False, True),
    "null-is-absent": Gap("the filter reads `null` for an optional field as absent; the schema "
                          "refuses null there on purpose (stricter)", True, False),
}


@dataclass
class Case:
    id: str
    config: Any = None
    raw: bytes | None = None     # when the text itself matters (repeated fields)
    valid: bool = True           # the verdict it was written to have (contract)
    gap: str | None = None       # a NOT_EXPRESSIBLE key
    field: str | None = None     # where the filter's error must point (prefix relation)
    marks: list = dc_field(default_factory=list)


def _set(config: dict, path: list, value: Any) -> dict:
    config = copy.deepcopy(config)
    node = config
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return config


DELETE = object()


def _dotted(path: list) -> str:
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else key)
    return out


def _base_uri() -> dict:
    return {"providers": {"okta": minimal_provider()}, "rules": [], "realm": "api"}


def _base_full() -> dict:
    return {
        "providers": {
            "okta": {
                "issuer": "https://dev-123456.okta.com/oauth2/default",
                "audiences": ["api://default"],
                "jwks": {"uri": "https://dev-123456.okta.com/oauth2/default/v1/keys",
                         "cluster": "okta_idp", "timeout_ms": 5000, "cache_duration_s": 300,
                         "min_refetch_interval_s": 30},
                "algorithms": ["RS256"], "clock_skew_s": 60, "max_lifetime_s": 86400,
                "client_ids": ["0oa1example"],
                "from": [{"header": "authorization", "prefix": "Bearer "},
                         {"query": "access_token"}, {"cookie": "access_token"}],
                "forward_token": False,
                "claims_to_headers": [{"claim": "sub", "header": "x-jwt-sub"},
                                      {"claim": "scp", "header": "x-jwt-scopes"}],
                "payload_header": "x-jwt-payload",
            },
            "inline": {"issuer": "https://issuer.example", "audiences": ["api://default"],
                       "jwks": {"inline": copy.deepcopy(JWKS)}},
            "disco": {"issuer": "https://dev-123456.okta.com/oauth2/aus1",
                      "audiences": ["api://orders"],
                      "jwks": {"discovery": True, "cluster": "okta_idp"}},
        },
        "rules": [
            {"match": {"prefix": "/healthz"}, "auth": "none"},
            {"match": {"prefix": "/api/orders", "methods": ["POST", "PUT"],
                       "headers": [{"name": "x-tenant", "exact": "acme"}]},
             "providers": ["okta"], "scopes": {"all": ["orders:write"]},
             "claims": [{"claim": "groups", "contains": "Admins"}],
             "rate_limits": [{"key": "claim:sub", "requests": 100, "per_s": 60, "burst": 20}]},
            {"match": {"template": "/users/{id}/profile"}, "auth": "optional",
             "claims": [{"claim": "uid", "equals_param": "id"}]},
        ],
        "realm": "api",
        "bypass_cors_preflight": True,
        "signature_backend": "auto",
        "token_cache_entries": 4096,
    }


P = ["providers", "okta"]
J = ["providers", "okta", "jwks"]
R1 = ["rules", 1]

# (path from the base, value or DELETE, valid, gap key or None). Paths index _base_full()
# unless they start at "uri:" (the minimal base).
VARIATIONS: list[tuple[list, Any, Any]] = [
    # top level
    (["providers"], DELETE, False), (["providers"], {}, False), (["providers"], [], False),
    (["extra"], 1, False), (["rules"], {}, False), (["rules"], [], True), (["rules"], DELETE, True),
    (["realm"], "orders api", True), (["realm"], "", False), (["realm"], 'a"b', False),
    (["realm"], "a\\b", False), (["realm"], "tab\there", False), (["realm"], "é", False),
    (["realm"], "api\n", False), (["realm"], 5, False), (["realm"], DELETE, True),
    (["bypass_cors_preflight"], False, True), (["bypass_cors_preflight"], "yes", False),
    (["signature_backend"], "host", True), (["signature_backend"], "pure", True),
    (["signature_backend"], "AUTO", False), (["signature_backend"], "", False),
    (["token_cache_entries"], 0, True), (["token_cache_entries"], 1_000_000, True),
    (["token_cache_entries"], 1_000_001, False), (["token_cache_entries"], -1, False),
    (["token_cache_entries"], "10", False), (["token_cache_entries"], 4096.5, False),
    (["path_parameters"], "reject", True), (["path_parameters"], "strip", True),
    (["path_parameters"], "keep", False), (["path_parameters"], True, False),
    (P + ["require_at_jwt"], True, True), (P + ["require_at_jwt"], False, True),
    (P + ["require_at_jwt"], "yes", False),
    # client address (issue 17; more cases in test_ip_config.py)
    (["client_ip"], {"xff_trusted_hops": 1}, True), (["client_ip"], {"xff_trusted_hops": 0}, False),
    (R1 + ["ip"], {"allow": ["10.0.0.0/8"]}, True), (R1 + ["ip"], {"allow": ["10.0.0.0/33"]}, False),
    (R1 + ["rate_limits", 0, "count"], "all", True),
    (R1 + ["rate_limits", 0, "count"], "denied", False),  # its key is a claim
    (R1 + ["rate_limits", 0], {"key": "ip", "requests": 5, "per_s": 60, "count": "denied"}, True),
    (R1 + ["rate_limits", 0, "count"], "failed", False),
    # contract fields this release does not implement: refused by both
    (["log"], {"allowed": True}, True), (["log"], {"claims": ["groups", "org.tier"]}, True),
    (["log"], {}, True), (["log"], {"allowed": "yes"}, False), (["log"], {"claims": [""]}, False),
    (["log"], {"level": "debug"}, False), (["log"], {"claims": ["c"] * 17}, False),
    # sender-constrained tokens (issue 14)
    (P + ["dpop"], "allowed", True), (P + ["dpop"], "required", True),
    (P + ["dpop"], "disabled", True), (P + ["dpop"], "on", False), (P + ["dpop"], True, False),
    (P + ["dpop_algorithms"], ["ES256"], True), (P + ["dpop_algorithms"], [], False),
    (P + ["dpop_algorithms"], ["HS256"], False), (P + ["dpop_algorithms"], ["none"], False),
    (P + ["dpop_max_age_s"], 300, True), (P + ["dpop_max_age_s"], 0, False),
    (P + ["dpop_max_age_s"], 3601, False), (P + ["dpop_max_age_s"], "300", False),
    (P + ["dpop_origin"], "https://api.example", True),
    (P + ["dpop_origin"], "http://api.example:8443", True),
    (P + ["dpop_origin"], "https://api.example/", False),
    (P + ["dpop_origin"], "https://api.example/v1", False),
    (P + ["dpop_origin"], "ftp://api.example", False),
    (P + ["dpop_origin"], "https://user@api.example", False),
    (P + ["mtls_binding"], "required", True), (P + ["mtls_binding"], "optional", False),
    (P + ["mtls_binding"], True, False),
    (P + ["introspection"], INTROSPECTION, True),
    (P + ["introspection"], {**INTROSPECTION, "client_secret": {"env": "HOME"}}, True),
    (P + ["introspection"], {**INTROSPECTION, "client_secret": {"env": "HOME", "x": 1}}, False),
    (P + ["introspection"], {**INTROSPECTION, "client_secret": ""}, False),
    (P + ["introspection"], {**INTROSPECTION, "client_secret": 7}, False),
    (P + ["introspection"], {**INTROSPECTION, "client_id": ""}, False),
    (P + ["introspection"], {**INTROSPECTION, "uri": "ftp://x/introspect"}, False),
    (P + ["introspection"], {**INTROSPECTION, "tokens": "all"}, True),
    (P + ["introspection"], {**INTROSPECTION, "tokens": "jwt"}, False),
    (P + ["introspection"], {**INTROSPECTION, "timeout_ms": 0}, False),
    (P + ["introspection"], {**INTROSPECTION, "timeout_ms": 60000}, True),
    (P + ["introspection"], {**INTROSPECTION, "cache_s": 0}, True),
    (P + ["introspection"], {**INTROSPECTION, "cache_s": 86401}, False),
    (P + ["introspection"], {**INTROSPECTION, "negative_cache_s": 3601}, False),
    (P + ["introspection"], {**INTROSPECTION, "max_entries": 0}, False),
    (P + ["introspection"], {**INTROSPECTION, "max_in_flight": 10001}, False),
    (P + ["introspection"], {**INTROSPECTION, "require_exp": False}, True),
    (P + ["introspection"], {**INTROSPECTION, "breaker": {"failures": 0}}, False),
    (P + ["introspection"], {**INTROSPECTION, "breaker": {"cool_down_s": 30}}, True),
    (P + ["introspection"], {**INTROSPECTION, "breaker": {"open_s": 30}}, False),
    (P + ["introspection"], {**INTROSPECTION, "extra": 1}, False),
    (P + ["introspection"], {k: v for k, v in INTROSPECTION.items() if k != "cluster"}, False),
    # provider names
    (["providers", "a" * 64], minimal_provider(), True),
    (["providers", "a" * 65], minimal_provider(), False),
    (["providers", "bad name"], minimal_provider(), False),
    (["providers", ""], minimal_provider(), False),
    (["providers", "Okta_2-b"], minimal_provider(), True),
    # issuer
    (P + ["issuer"], DELETE, False), (P + ["issuer"], "", False), (P + ["issuer"], 7, False),
    (P + ["issuer"], "https://dev-123456.okta.com/oauth2/default/", True),
    (P + ["issuer"], "http://localhost:8080/oauth2/x", True),
    (P + ["issuer"], "urn:example:issuer", True), (P + ["issuer"], "okta", True),
    (["providers", "disco", "issuer"], "urn:example:issuer", False),
    # audiences
    (P + ["audiences"], DELETE, False), (P + ["audiences"], [], False),
    (P + ["audiences"], [""], False), (P + ["audiences"], ["a", "b"], True),
    (P + ["audiences"], "api://default", False), (P + ["audiences"], [1], False),
    # jwks
    (J, DELETE, False), (J, {}, False),
    (J + ["discovery"], True, False), (J + ["inline"], copy.deepcopy(JWKS), False),
    (J + ["discovery"], False, True),
    (J, {"discovery": False, "cluster": "okta_idp"}, False),
    (J + ["cluster"], DELETE, False), (J + ["cluster"], "", False),
    (J + ["uri"], "ftp://x/keys", False), (J + ["uri"], "https://", False),
    (J + ["uri"], "https://user@host/keys", False), (J + ["uri"], "https://host", True),
    (J + ["uri"], "/v1/keys", False), (J + ["uri"], 5, False), (J + ["url"], "https://x", False),
    (["providers", "disco", "jwks", "cluster"], DELETE, False),
    (["providers", "inline", "jwks", "cluster"], "okta_idp", False),
    (["providers", "inline", "jwks", "cluster"], "", False),
    (["providers", "inline", "jwks", "inline"], {"keys": []}, False),
    (["providers", "inline", "jwks", "inline"], {"keys": [RFC_KEY] * 64}, True),
    (["providers", "inline", "jwks", "inline"], {"keys": [RFC_KEY] * 65}, False),
    (["providers", "inline", "jwks", "inline"], "keys", False),
    (["providers", "inline", "jwks", "inline"], {"keys": [RFC_KEY, {"kty": 5}, "junk"]}, True),
    (["providers", "inline", "jwks", "inline"], {"keys": [RFC_KEY], "extra": 1}, True),
    (["providers", "inline", "jwks", "inline"], {"keys": [{**RFC_KEY, "n": "AQAB"}]}, "usable-key"),
    (["providers", "inline", "jwks", "inline"], {"keys": [{**RFC_KEY, "d": "AQAB"}]}, "usable-key"),
    (["providers", "inline", "jwks", "inline"], {"keys": [{"kty": "oct", "k": "AQAB"}]}, "usable-key"),
    (J + ["timeout_ms"], 0, False), (J + ["timeout_ms"], 1, True), (J + ["timeout_ms"], 60000, True),
    (J + ["timeout_ms"], 60001, False), (J + ["cache_duration_s"], 29, False),
    (J + ["cache_duration_s"], 30, True), (J + ["cache_duration_s"], 86400, True),
    (J + ["cache_duration_s"], 86401, False), (J + ["min_refetch_interval_s"], 0, False),
    (J + ["min_refetch_interval_s"], 1, True), (J + ["min_refetch_interval_s"], 86400, True),
    (J + ["min_refetch_interval_s"], 86401, False), (J + ["timeout_ms"], 5000.0, "integer-spelling"),
    # algorithms
    (P + ["algorithms"], [], False), (P + ["algorithms"], ["RS256", "ES256", "EdDSA"], True),
    (P + ["algorithms"], ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
                          "ES384", "EdDSA"], True),
    (P + ["algorithms"], ["HS256"], False), (P + ["algorithms"], ["none"], False),
    (P + ["algorithms"], ["rs256"], False), (P + ["algorithms"], ["RS256", "RS256"], True),
    (P + ["algorithms"], "RS256", False), (P + ["algorithms"], ["ES512"], False),
    # clock skew, lifetime, clients
    (P + ["clock_skew_s"], 0, True), (P + ["clock_skew_s"], 3600, True),
    (P + ["clock_skew_s"], 3601, False), (P + ["clock_skew_s"], -1, False),
    (P + ["clock_skew_s"], "60", False), (P + ["clock_skew_s"], 60.0, "integer-spelling"),
    (P + ["max_lifetime_s"], 0, False), (P + ["max_lifetime_s"], 1, True),
    (P + ["max_lifetime_s"], 18446744073709551615, True),
    (P + ["max_lifetime_s"], 18446744073709551616, False),
    (P + ["client_ids"], [], False), (P + ["client_ids"], [""], False),
    (P + ["client_ids"], ["0oa1", "0oa2"], True),
    # token sources
    (P + ["from"], [], False), (P + ["from"], [{"header": "X-Token"}], True),
    (P + ["from"], [{"query": "access_token"}], True), (P + ["from"], [{"cookie": "at"}], True),
    (P + ["from"], [{"header": "x token"}], False), (P + ["from"], [{"header": "x-tok\n"}], False),
    (P + ["from"], [{"query": ""}], False), (P + ["from"], [{"cookie": "a b"}], False),
    (P + ["from"], [{"cookie": ""}], False), (P + ["from"], [{"query": "t", "prefix": "x"}], False),
    (P + ["from"], [{"cookie": "t", "prefix": "x"}], False),
    (P + ["from"], [{"header": "h", "query": "q"}], False), (P + ["from"], [{}], False),
    (P + ["from"], [{"prefix": "Bearer "}], False),
    (P + ["from"], [{"header": "authorization", "prefix": ""}], True),
    (P + ["from"], [{"header": "authorization", "prefix": 1}], False),
    (P + ["forward_token"], True, True), (P + ["forward_token"], "false", False),
    (P + ["forward_token"], None, False),
    # claims to headers, payload header
    (P + ["claims_to_headers"], [{"claim": "org.team.id", "header": "X-Team"}], True),
    (P + ["claims_to_headers", 0, "header"], "Authorization", False),
    (P + ["claims_to_headers", 0, "header"], "X-Request-Id", False),
    (P + ["claims_to_headers", 0, "header"], "HOST", False),
    (P + ["claims_to_headers", 0, "header"], "tE", False),
    (P + ["claims_to_headers", 0, "header"], "x-te", True),
    (P + ["claims_to_headers", 0, "header"], "teapot", True),
    (P + ["claims_to_headers", 0, "header"], "x sub", False),
    (P + ["claims_to_headers", 0, "claim"], "a..b", False),
    (P + ["claims_to_headers", 0, "claim"], "a.b.c.d.e.f.g.h", True),
    (P + ["claims_to_headers", 0, "claim"], "a.b.c.d.e.f.g.h.i", False),
    (P + ["claims_to_headers", 0, "claim"], "", False),
    (P + ["claims_to_headers", 0, "claim"], ".sub", False),
    (P + ["claims_to_headers", 0, "header"], DELETE, False),
    (P + ["claims_to_headers", 0, "as"], "string", False),
    (P + ["payload_header"], "cookie", False), (P + ["payload_header"], "Content-Type", False),
    (P + ["payload_header"], "", False), (P + ["payload_header"], "bad header", False),
    (P + ["payload_header"], "X-Payload", True),
    # rules: match
    (["rules", 0], {}, True),
    (R1 + ["match", "prefix"], "api", False), (R1 + ["match", "exact"], "/x", False),
    (R1 + ["match"], {"exact": "/x"}, True), (R1 + ["match"], {"exact": "x"}, False),
    (R1 + ["match"], {"template": "/users/{id}"}, True),
    (R1 + ["match"], {"template": "users/{id}"}, False),
    (R1 + ["match"], {"template": "/users/{id"}, False),
    (R1 + ["match"], {"template": "/users/x{id}"}, False),
    (R1 + ["match"], {"template": "/users/{}"}, False),
    (R1 + ["match"], {"template": "/{a-b}"}, False),
    (R1 + ["match"], {"template": "/{a}\n"}, False),
    (R1 + ["match"], {"template": "/{a}/x/{b}"}, True),
    (R1 + ["match"], {"template": "//"}, True),
    (R1 + ["match"], {"template": "/{a}/{a}"}, "template-unique"),
    (R1 + ["match"], {"prefix": "/a", "template": "/a/{b}"}, False),
    (R1 + ["match", "methods"], [], False), (R1 + ["match", "methods"], ["get"], False),
    (R1 + ["match", "methods"], ["M-SEARCH"], False), (R1 + ["match", "methods"], ["GET", "PATCH"], True),
    (R1 + ["match", "headers"], [{"name": "x-debug", "present": False}], True),
    (R1 + ["match", "headers"], [{"name": "x-v", "prefix": "v2"}], True),
    (R1 + ["match", "headers"], [{"name": "x-v"}], False),
    (R1 + ["match", "headers"], [{"name": "x-v", "exact": "a", "prefix": "b"}], False),
    (R1 + ["match", "headers"], [{"name": "bad name", "exact": "a"}], False),
    (R1 + ["match", "headers"], [{"name": "x-v", "present": "yes"}], False),
    (R1 + ["match", "path"], "/x", False),
    # rules: auth, providers, scopes
    (R1 + ["auth"], "optional", True), (R1 + ["auth"], "NONE", False), (R1 + ["auth"], "none", False),
    (["rules", 2, "auth"], "none", False),
    (["rules", 0, "claims"], [], True), (["rules", 0, "rate_limits"], [{"key": "ip", "requests": 5, "per_s": 1}], True),
    (["rules", 0, "scopes"], {"all": ["a"]}, False),
    (R1 + ["providers"], ["okta", "disco"], True), (R1 + ["providers"], [], False),
    (R1 + ["providers"], "okta", False), (R1 + ["providers"], ["nope"], "rule-providers"),
    (R1 + ["scopes"], {"any": ["a", "b"]}, True), (R1 + ["scopes"], {}, False),
    (R1 + ["scopes"], {"all": []}, False), (R1 + ["scopes"], {"all": [], "any": ["x"]}, True),
    (R1 + ["scopes"], {"all": ["a b"]}, False), (R1 + ["scopes"], {"all": ['a"b']}, False),
    (R1 + ["scopes"], {"all": [""]}, False), (R1 + ["scopes"], {"none": ["x"]}, False),
    (R1 + ["scopes"], {"all": ["api://x.read"]}, True),
    # rules: claims
    (R1 + ["claims"], [{"claim": "tier", "equals": 1}], True),
    (R1 + ["claims"], [{"claim": "org", "equals": {"a": [1]}}], True),
    (R1 + ["claims"], [{"claim": "tier", "equals": None}], False),
    (R1 + ["claims"], [{"claim": "tier", "in": []}], False),
    (R1 + ["claims"], [{"claim": "tier", "in": ["a", None, 3]}], True),
    (R1 + ["claims"], [{"claim": "groups", "contains": None}], False),
    (R1 + ["claims"], [{"claim": "tier", "equals": "a", "in": ["a"]}], False),
    (R1 + ["claims"], [{"claim": "tier"}], False),
    (R1 + ["claims"], [{"claim": "a..b", "equals": 1}], False),
    (R1 + ["claims"], [{"claim": "tier", "regex": "x"}], False),
    (R1 + ["claims"], [{"claim": "uid", "equals_param": "id"}], "equals-param"),
    (["rules", 2, "claims", 0, "equals_param"], "user", "equals-param"),
    # rules: rate limits
    (R1 + ["rate_limits", 0, "key"], "claim:org.id", True),
    (R1 + ["rate_limits", 0, "key"], "header:X-Api-Key", True),
    (R1 + ["rate_limits", 0, "key"], "ip", True), (R1 + ["rate_limits", 0, "key"], "route", True),
    (R1 + ["rate_limits", 0, "key"], "user", False), (R1 + ["rate_limits", 0, "key"], "claim:", False),
    (R1 + ["rate_limits", 0, "key"], "header:", False),
    (R1 + ["rate_limits", 0, "key"], "header:bad name", False),
    (R1 + ["rate_limits", 0, "key"], "IP", False),
    (R1 + ["rate_limits", 0, "key"], "claim:a..b", False),
    (R1 + ["rate_limits", 0, "requests"], 0, False),
    (R1 + ["rate_limits", 0, "requests"], 1_000_000_000, True),
    (R1 + ["rate_limits", 0, "requests"], 1_000_000_001, False),
    (R1 + ["rate_limits", 0, "requests"], "5", False),
    (R1 + ["rate_limits", 0, "per_s"], 0, False), (R1 + ["rate_limits", 0, "per_s"], 31_622_400, True),
    (R1 + ["rate_limits", 0, "per_s"], 31_622_401, False),
    (R1 + ["rate_limits", 0, "per_s"], DELETE, False),
    (R1 + ["rate_limits", 0, "burst"], 0, False), (R1 + ["rate_limits", 0, "burst"], DELETE, True),
    (R1 + ["rate_limits", 0, "max_keys"], 0, False),
    (R1 + ["rate_limits", 0, "max_keys"], 1_000_000, True),
    (R1 + ["rate_limits", 0, "max_keys"], 1_000_001, False),
    (R1 + ["rate_limits", 0, "window"], 2, False),
    (R1 + ["rate_limits", 0, "requests"], 1e2, "integer-spelling"),
    # null where the filter reads "absent"
    (["realm"], None, "null-is-absent"), (P + ["algorithms"], None, "null-is-absent"),
    (R1 + ["rate_limits", 0, "burst"], None, "null-is-absent"),
    (R1 + ["auth"], None, "null-is-absent"),
]


def _variation_case(path: list, value: Any, expect: Any) -> Case:
    config = _set(_base_full(), path, value)
    shown = "deleted" if value is DELETE else json.dumps(value)
    if len(shown) > 40:  # long values: a prefix and a digest keep ids short and unique
        shown = shown[:30] + "~" + hashlib.sha1(shown.encode()).hexdigest()[:6]
    gap = expect if isinstance(expect, str) else None
    valid = NOT_EXPRESSIBLE[gap].filter_ok if gap else bool(expect)
    case = Case(id=f"{_dotted(path)}={shown}", config=config, valid=valid, gap=gap,
                field=_dotted(path[:-1] if isinstance(path[-1], str) and value is DELETE
                              else path))
    if valid and not gap:
        case.marks = pending_marks(config)
    return case


def _combination_cases(seed: int = 11, count: int = 60) -> list[Case]:
    """Random combinations (fixed seed) of 2-4 variations on different fields: all valid
    ones must give a valid configuration, and one invalid variation among valid ones an
    invalid one."""
    rng = random.Random(seed)
    plain = [(p, v, e) for p, v, e in VARIATIONS if isinstance(e, bool) and v is not DELETE]
    good = [v for v in plain if v[2] and not pending_fixes(_set(_base_full(), v[0], v[1]))]
    bad = [v for v in plain if not v[2]]
    cases = []
    for i in range(count):
        picks = rng.sample(good, rng.randint(2, 4))
        invalid = i % 2 == 1
        if invalid:
            picks = picks[:-1] + [rng.choice(bad)]
        paths = [_dotted(p) for p, _, _ in picks]
        # Variations on the same field, or on a field inside another one, would overwrite
        # each other; skip such draws.
        if any(a != b and (a.startswith(b) or b.startswith(a)) or a == b
               for j, a in enumerate(paths) for b in paths[j + 1:]):
            continue
        config = _base_full()
        for p, v, _ in picks:
            config = _set(config, p, v)
        cases.append(Case(id=f"combo{i}:" + "+".join(paths), config=config, valid=not invalid))
    return cases


def _hand_written_cases() -> list[Case]:
    base = json.dumps(_base_uri())
    uri = _base_uri()
    return [
        Case("minimal", config={"providers": {"okta": minimal_provider()}}),
        Case("empty document", config={}, valid=False, field=""),
        Case("array document", config=[], valid=False, field=""),
        Case("string document", config="providers", valid=False, field=""),
        Case("null document", config=None, valid=False, field=""),
        Case("repeated top-level field", valid=False, gap="duplicate-field",
             raw=(base[:-1] + ', "realm": "other"}').encode()),
        Case("repeated provider field", valid=False, gap="duplicate-field",
             raw=base.replace('"audiences"', '"audiences": ["x"], "audiences"').encode()),
        Case("two providers, same issuer, different sources", config={
            "providers": {"header": minimal_provider(),
                          "cookie": {**minimal_provider(), "from": [{"cookie": "at"}]}},
            "rules": [{"match": {"prefix": "/web"}, "providers": ["cookie"]},
                      {"providers": ["header", "cookie"]}]}),
        Case("every rule kind", config={**uri, "rules": [
            {"match": {"exact": "/"}, "auth": "none"},
            {"match": {"prefix": "/p/", "methods": ["GET"]}, "auth": "optional"},
            {"match": {"template": "/o/{org}/u/{user}", "headers": [{"name": "x", "present": True}]},
             "claims": [{"claim": "org", "equals_param": "org"},
                        {"claim": "sub", "equals_param": "user"}]},
            {"match": {}, "scopes": {"all": ["a"], "any": ["b", "c"]},
             "rate_limits": [{"key": "route", "requests": 1, "per_s": 1},
                             {"key": "header:x-k", "requests": 2, "per_s": 3, "burst": 4,
                              "max_keys": 5}]}]}),
        Case("discovery with a non-URL issuer", valid=False, field="providers.okta", config={
            "providers": {"okta": {"issuer": "okta", "audiences": ["a"],
                                   "jwks": {"discovery": True, "cluster": "c"}}}}),
        Case("provider only in a rule, not configured", gap="rule-providers", valid=False,
             config={**uri, "rules": [{"providers": ["other"]}]}, field="rules[0].providers"),
        Case("configuration over 1 MiB", valid=False, gap="size", field="", config={
            **uri, "rules": [{"match": {"prefix": "/" + "x" * 1024}} for _ in range(1100)]}),
    ]


def corpus() -> list[Case]:
    cases = [_variation_case(p, v, e) for p, v, e in VARIATIONS]
    cases += _combination_cases()
    cases += _hand_written_cases()
    ids = [c.id for c in cases]
    dupes = {i for i in ids if ids.count(i) > 1}
    assert not dupes, f"duplicate case ids: {dupes}"
    return cases


CORPUS = corpus()


def test_the_corpus_is_large_and_balanced():
    valid = [c for c in CORPUS if c.valid and not c.gap]
    invalid = [c for c in CORPUS if not c.valid and not c.gap]
    gaps = {c.gap for c in CORPUS if c.gap}
    assert len(CORPUS) >= 100, len(CORPUS)
    assert len(valid) >= 50 and len(invalid) >= 100, (len(valid), len(invalid))
    assert gaps == set(NOT_EXPRESSIBLE), f"gaps without a case: {set(NOT_EXPRESSIBLE) - gaps}"


def _case_params() -> list:
    params = []
    for c in CORPUS:
        if c.gap:
            continue
        params.append(pytest.param(c, id=c.id, marks=c.marks))
    return params


def _check_field(case: Case, verdict: Verdict) -> None:
    """A refusal must be about the field the case changed (not some other mistake)."""
    if case.field is None:
        return
    got = verdict.field
    # The field itself, something inside it, or a sibling (rules that tie two fields of one
    # object together name either of them).
    parent = re.sub(r"(\.[^.\[\]]*|\[\d+\])$", "", case.field)
    assert got.startswith(parent) or case.field.startswith(got), \
        f"refused for another field: wanted {case.field!r}, got: {verdict.stderr.strip()}"


@needs_cli
@pytest.mark.parametrize("case", _case_params())
def test_schema_and_filter_agree(case: Case, okta_jwt):
    schema = schema_errors(json.loads(case.raw) if case.raw else case.config)
    verdict = okta_jwt.check(case.config, case.raw)
    assert (not schema) == verdict.ok, (
        f"disagreement: schema {'accepts' if not schema else 'refuses: ' + '; '.join(schema)}"
        f"; filter {'accepts' if verdict.ok else 'refuses: ' + verdict.stderr.strip()}")
    assert verdict.ok == case.valid, (
        f"both {'accept' if verdict.ok else 'refuse'} a case written to be "
        f"{'valid' if case.valid else 'invalid'}: {verdict.stderr.strip() or schema}")
    if not verdict.ok:
        _check_field(case, verdict)


@needs_cli
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CORPUS if c.gap])
def test_rules_the_schema_cannot_express(case: Case, okta_jwt):
    """Each listed rule: the filter and the schema differ exactly as documented."""
    gap = NOT_EXPRESSIBLE[case.gap]
    instance = json.loads(case.raw) if case.raw else case.config
    verdict = okta_jwt.check(case.config, case.raw)
    schema_ok = not schema_errors(instance)
    assert verdict.ok == gap.filter_ok, f"{gap.rule}: filter: {verdict.stderr.strip() or 'ok'}"
    assert schema_ok == gap.schema_ok, f"{gap.rule}: the schema {'accepts' if schema_ok else 'refuses'} it"
    if not verdict.ok:
        _check_field(case, verdict)


def test_configuration_md_lists_the_rules_the_schema_cannot_express():
    doc = (REPO / "docs" / "configuration.md").read_text()
    section = doc[doc.index("## What the schema cannot check"):]
    for needle in ["`providers` must be a configured provider", "`equals_param`",
                   "parameter names must be unique", "usable key", "same field twice",
                   "fraction or exponent", "`null`", "1 MiB"]:
        assert needle in section, needle
