"""Envoy stats_tags for the filter's stats (issue 12): with the tag specifiers of
deploy/observability/envoy-stats-tags.yml, which the test bootstrap (envoy/envoy.yaml.tmpl)
carries, a real Envoy's /stats/prometheus shows one metric per stat family with the reason,
provider, rule, limit and fetch or introspection outcome class as labels
(`okta_jwt_denied{reason="expired"}`, `okta_jwt_introspection_calls{class="active",provider=
"org"}`) instead of one metric name per value (`okta_jwt_denied_expired`). The same list is in
envoy/production.yaml and in the Istio and Envoy Gateway guides.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import harness
from assertions import assert_allowed, assert_denied, assert_invalid_token, assert_no_token
from envoy_client import EnvoyClient
from filter_config import filter_config
from idp_client import DEMO_CLIENT, ORG, IdpClient
from test_schema import markdown_blocks

REPO = harness.REPO
STATS_TAGS_FILE = REPO / "deploy" / "observability" / "envoy-stats-tags.yml"
TEMPLATE = REPO / "envoy" / "envoy.yaml.tmpl"
PRODUCTION = REPO / "envoy" / "production.yaml"
FILTER_TEMPLATE = REPO / "envoy" / "filter.json.tmpl"
# Guides that show how to add the tags on a platform whose bootstrap is not ours.
PLATFORM_GUIDES = [REPO / "docs" / "deploy-istio.md", REPO / "docs" / "deploy-envoy-gateway.md"]
PREFIX = "okta_jwt_"
WAIT_S = 30  # gauges are set on the filter's tick; a loaded machine may take seconds


# --- reading /stats/prometheus ----------------------------------------------------------------

@dataclass
class Family:
    name: str
    type: str
    samples: list  # prometheus_client Samples: name, labels, value

    @property
    def label_names(self) -> set[str]:
        return {k for s in self.samples for k in s.labels}

    def label_values(self, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if label in s.labels}


def okta_families(text: str) -> dict[str, Family]:
    """The filter's metric families in a /stats/prometheus answer, parsed by the Prometheus
    client library's parser (so the output is also proven to be valid exposition text)."""
    out = {}
    for f in text_string_to_metric_families(text):
        if f.name.startswith(PREFIX):
            out[f.name] = Family(f.name, f.type, list(f.samples))
    return out


def sample(families: dict[str, Family], name: str, **labels: str) -> float:
    """The value of the one sample of family `name` with exactly these labels; fails when there
    is none, so a missing label never reads as 0. (The client library names a counter's samples
    `<name>_total`, as OpenMetrics does; Envoy, and what Prometheus stores, have no suffix.)"""
    family = families.get(name)
    assert family is not None, f"no metric {name}: {sorted(families)}"
    found = [s.value for s in family.samples if s.labels == labels]
    assert len(found) == 1, f"{len(found)} samples {name}{labels}: " + ", ".join(
        str(s.labels) for s in family.samples)
    return found[0]


def scrape(envoy: EnvoyClient) -> dict[str, Family]:
    return okta_families(envoy.prometheus())


def introspecting_provider(idp_url: str) -> dict:
    """A provider for the mock IdP's org authorization server (Okta's `https://{org}.okta.com`:
    opaque tokens, issuer and audience the IdP's URL), introspected through the stack's
    `okta_idp` cluster, with no key set. Requests carry the demo client's credentials."""
    return {"issuer": idp_url, "audiences": [idp_url],
            "introspection": {"uri": IdpClient(idp_url).introspection_uri(ORG),
                              "cluster": "okta_idp", "client_id": DEMO_CLIENT[0],
                              "client_secret": DEMO_CLIENT[1], "timeout_ms": 3000}}


# --- where the tags are written down -----------------------------------------------------------

def snippet_tags() -> list[dict]:
    return yaml.safe_load(STATS_TAGS_FILE.read_text())["stats_config"]["stats_tags"]


def bootstrap_tags(path: Path) -> list[dict] | None:
    text = path.read_text()
    if path.name.endswith(".tmpl"):
        text = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", "x", text)
    return (yaml.safe_load(text).get("stats_config") or {}).get("stats_tags")


def find_stats_tags(node: Any) -> Iterator[list]:
    """Every `stats_tags` list in a document, also inside string values that hold YAML or JSON
    (an EnvoyProxy's `bootstrap.value`, a ConfigMap's `custom_bootstrap.json`)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "stats_tags" and isinstance(v, list):
                yield v
            else:
                yield from find_stats_tags(v)
    elif isinstance(node, list):
        for v in node:
            yield from find_stats_tags(v)
    elif isinstance(node, str) and "stats_tags" in node:
        try:
            inner = yaml.safe_load(node)  # JSON is YAML too
        except yaml.YAMLError:
            return
        if not isinstance(inner, str):
            yield from find_stats_tags(inner)


def doc_tags(path: Path) -> list[tuple[str, list]]:
    out = []
    for lang, _, body, line in markdown_blocks(path):
        if lang in ("yaml", "yml", "json") and "stats_tags" in body:
            for doc in yaml.safe_load_all(body):
                for tags in find_stats_tags(doc):
                    out.append((f"{path.relative_to(REPO)}:{line}", tags))
    return out


def test_the_snippet_is_well_formed():
    tags = snippet_tags()
    names = [t["tag_name"] for t in tags]
    # Envoy refuses a bootstrap that names a tag twice.
    assert len(names) == len(set(names)), names
    assert {"reason", "provider", "rule"} <= set(names), names
    for t in tags:
        assert set(t) == {"tag_name", "regex"}, t
        rx = re.compile(t["regex"])  # these regexes mean the same in Python, RE2 and ECMAScript
        # Anchored to the Wasm namespace, so Envoy only tries them on the filter's stats.
        assert t["regex"].startswith(r"^wasmcustom\."), t
        assert rx.groups >= 2, f"{t['tag_name']}: a part to cut and the value inside it"


METRICS_RS = REPO / "src" / "shell" / "metrics.rs"


def envoy_tag_extraction(name: str) -> tuple[str, dict[str, str]]:
    """What Envoy does with the tags: every regex is matched against the full name, the first
    group of each match is cut out and the second becomes the tag's value."""
    cuts, tags = [], {}
    for t in snippet_tags():
        m = re.match(t["regex"], name)
        if m:
            cuts.append(m.span(1))
            tags[t["tag_name"]] = m.group(2)
    kept = "".join(c for i, c in enumerate(name) if not any(a <= i < b for a, b in cuts))
    return kept, tags


def metrics_rs_classes(const: str) -> list[str]:
    body = re.search(rf"const {const}: \[&str; \d+\] = \[(.*?)\];", METRICS_RS.read_text(), re.S)
    assert body, f"{const} not found in metrics.rs"
    return re.findall(r'"([a-z0-9_]+)"', body.group(1))


@pytest.mark.parametrize("provider", ["okta", "okta-eu", "org_2", "active", "cached_x"])
def test_every_per_provider_stat_loses_its_values(provider):
    """Each per-provider name metrics.rs defines (`..._{p}`), for every class it lists (`{c}`),
    becomes its family with exactly the provider (and class) tags, also for provider names
    that look like a class or a stat."""
    classes = {"okta_jwt_jwks_fetch_outcome_": metrics_rs_classes("FETCH_CLASSES"),
               "okta_jwt_introspection_calls_": metrics_rs_classes("INTROSPECTION_CLASSES")}
    templates = [n for n in re.findall(r'"(okta_jwt_[^"]*)"', METRICS_RS.read_text())
                 if n.endswith("_{p}")]
    assert any(n.startswith("okta_jwt_introspection_") for n in templates), templates
    checked = 0
    for template in templates:
        family = template.removesuffix("_{p}")
        values = [(None, family)]
        if family.endswith("_{c}"):
            family = family.removesuffix("_{c}")
            values = [(c, f"{family}_{c}") for c in classes[family + "_"]]
        for c, stem in values:
            kept, found = envoy_tag_extraction(f"wasmcustom.{stem}_{provider}")
            expected = {"provider": provider, **({"class": c} if c else {})}
            assert (kept, found) == (f"wasmcustom.{family}", expected), stem
            checked += 1
    assert checked >= 6 + 6 + 5 + 11, checked


def test_the_same_tags_are_in_every_bootstrap_and_guide():
    expected = snippet_tags()
    assert bootstrap_tags(TEMPLATE) == expected, "envoy/envoy.yaml.tmpl"
    assert bootstrap_tags(PRODUCTION) == expected, "envoy/production.yaml"
    for guide in PLATFORM_GUIDES:
        found = doc_tags(guide)
        assert found, f"{guide.relative_to(REPO)} shows no stats_tags"
        for where, tags in found:
            assert tags == expected, f"{where}: not the list of {STATS_TAGS_FILE.name}"


# --- real Envoy ----------------------------------------------------------------------------

def test_a_denial_is_counted_under_its_reason_label(envoy, idp):
    before = scrape(envoy)
    assert_no_token(envoy.get("/api/orders"))
    assert_invalid_token(envoy.get("/api/orders", idp.mint({"exp": 1_000_000_000,
                                                             "iat": 999_999_000})))
    text = envoy.prometheus()
    after = okta_families(text)
    for reason in ("missing_token", "expired"):
        grew = (sample(after, "okta_jwt_denied", reason=reason)
                - sample(before, "okta_jwt_denied", reason=reason))
        assert grew == 1, f"okta_jwt_denied{{reason={reason!r}}} grew by {grew}"
    # The exact exposition line, and no per-reason metric name left.
    assert re.search(r'^okta_jwt_denied\{reason="missing_token"\} [1-9]\d*$', text, re.M), \
        "\n".join(l for l in text.splitlines() if "okta_jwt_denied" in l)
    assert not re.search(r"^okta_jwt_denied_", text, re.M)
    assert after["okta_jwt_denied"].type == "counter"
    assert after["okta_jwt_denied"].label_names == {"reason"}


def test_key_stats_carry_the_provider_label(envoy, idp):
    assert_allowed(envoy.get("/api/orders", idp.mint()))
    assert_denied(envoy.get("/broken", idp.mint(server="broken")), 503)
    providers = set(json.loads(FILTER_TEMPLATE.read_text())["providers"])
    families = scrape(envoy)
    provider_families = [f for f in families.values() if f.name.startswith("okta_jwt_jwks_")]
    assert {"okta_jwt_jwks_fetch_success", "okta_jwt_jwks_fetch_failure", "okta_jwt_jwks_keys",
            "okta_jwt_jwks_age_s"} <= {f.name for f in provider_families}, sorted(families)
    for f in provider_families:
        assert "provider" in f.label_names, f"{f.name} has no provider label"
        assert f.label_values("provider") == providers, f.name
    assert sample(families, "okta_jwt_jwks_fetch_success", provider="okta") >= 1
    assert sample(families, "okta_jwt_jwks_fetch_failure", provider="broken") >= 1
    assert sample(families, "okta_jwt_jwks_fetch_success", provider="broken") == 0
    assert sample(families, "okta_jwt_jwks_keys", provider="okta") >= 1
    assert sample(families, "okta_jwt_jwks_keys", provider="broken") == 0


def test_fetch_outcomes_carry_class_and_provider_labels(envoy, idp):
    assert_denied(envoy.get("/broken", idp.mint(server="broken")), 503)
    families = scrape(envoy)
    outcome = families.get("okta_jwt_jwks_fetch_outcome")
    assert outcome is not None, sorted(families)
    assert outcome.label_names == {"class", "provider"}, outcome.samples[:3]
    assert "ok" in outcome.label_values("class")
    assert sum(s.value for s in outcome.samples
               if s.labels == {"class": "ok", "provider": "okta"}) >= 1
    # The broken provider's keys URI answers 404.
    assert sample(families, "okta_jwt_jwks_fetch_outcome", **{"class": "status_4xx",
                                                              "provider": "broken"}) >= 1


def test_rate_limit_stats_carry_rule_and_limit_labels(envoy, idp, unique):
    rule = str(next(i for i, r in enumerate(json.loads(FILTER_TEMPLATE.read_text())["rules"])
                    if r.get("rate_limits")))
    token = idp.mint({"sub": f"tags-{unique}"})
    before = scrape(envoy)
    statuses = [envoy.get("/limited", token).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429], statuses
    after = scrape(envoy)
    for name, grew in (("okta_jwt_ratelimit_admitted", 3), ("okta_jwt_ratelimit_limited", 1)):
        delta = sample(after, name, rule=rule) - sample(before, name, rule=rule)
        assert delta == grew, f"{name}{{rule={rule!r}}} grew by {delta}"
    assert after["okta_jwt_ratelimit_buckets"].label_names == {"rule", "limit"}
    harness.wait_until(
        lambda: sample(scrape(envoy), "okta_jwt_ratelimit_buckets", rule=rule, limit="0") >= 1,
        WAIT_S, "the bucket gauge of the limit")


def test_no_metric_name_still_carries_a_value(envoy):
    """Complete tags: no family of the filter is named after a reason, a provider or a rule."""
    config = json.loads(FILTER_TEMPLATE.read_text())
    families = scrape(envoy)
    reasons = families["okta_jwt_denied"].label_values("reason")
    assert {"missing_token", "bad_signature", "expired"} <= reasons, reasons
    for name in families:
        assert not name.startswith("okta_jwt_denied_"), f"{name}: a reason in the name"
        for provider in config["providers"]:
            assert not name.endswith(f"_{provider}"), f"{name}: provider {provider!r} in the name"
        assert not re.search(r"_rule_\d|_limit_\d", name), f"{name}: a rule in the name"


def test_the_histogram_has_only_bucket_labels(envoy, idp):
    assert_allowed(envoy.get("/api/orders", idp.mint()))
    # Envoy publishes histograms at its stats flush (every 5 s by default).
    family = harness.wait_until(
        lambda: (f := scrape(envoy).get("okta_jwt_decision_time_us"))
        and any(s.name.endswith("_count") and s.value > 0 for s in f.samples) and f,
        WAIT_S, "okta_jwt_decision_time_us samples")
    assert family.type == "histogram"
    assert family.label_names == {"le"}, family.label_names


@pytest.mark.local_only
def test_tags_hold_for_any_provider_name_and_rule_index(tmp_path):
    """Provider names may have `-` and `_` ([A-Za-z0-9_-]); rule indexes more than one digit;
    a provider that introspects gets its calls by class, cache and gauges as labels too."""
    fillers = [{"match": {"prefix": f"/filler{i}"}, "auth": "none"} for i in range(10)]
    limited = {"match": {"prefix": "/limited"}, "providers": ["okta-us", "okta_eu_2"],
               "rate_limits": [{"key": "claim:sub", "requests": 1, "per_s": 3600},
                               {"key": "route", "requests": 1000, "per_s": 3600}]}
    opaque = {"match": {"prefix": "/opaque"}, "providers": ["org-intro_1"]}
    base = filter_config({"okta-us": {}, "okta_eu_2": {"server": "second"}},
                         [*fillers, limited, opaque])

    def config(variables: dict[str, str]) -> dict:
        c = base(variables)
        c["providers"]["org-intro_1"] = introspecting_provider(variables["IDP_URL"])
        return c

    stack = harness.start_stack(tmp_path, filter_config=config)
    try:
        envoy, idp = EnvoyClient(stack.envoy_url, stack.admin_url), IdpClient(stack.idp_url)
        check_introspection_labels(envoy, idp, "org-intro_1")
        assert_allowed(envoy.get("/limited", idp.mint({"sub": "a"})))
        assert_denied(envoy.get("/limited", idp.mint({"sub": "a"})), 429)
        assert_allowed(envoy.get("/limited", idp.mint({"sub": "b"}, server="second")))
        families = harness.wait_until(
            lambda: (f := scrape(envoy))
            and all(s.value >= 1 for s in f["okta_jwt_jwks_keys"].samples
                    if s.labels["provider"] != "org-intro_1") and f,
            WAIT_S, "both providers' key gauges")
        # Every provider has key stats; the one without a key set keeps them at 0.
        assert families["okta_jwt_jwks_keys"].label_values("provider") == {
            "okta-us", "okta_eu_2", "org-intro_1"}
        assert sample(families, "okta_jwt_jwks_keys", provider="org-intro_1") == 0
        for provider in ("okta-us", "okta_eu_2"):
            assert sample(families, "okta_jwt_jwks_fetch_success", provider=provider) >= 1
            assert sample(families, "okta_jwt_jwks_age_s", provider=provider) >= 0
        assert sample(families, "okta_jwt_ratelimit_admitted", rule="10") == 2
        assert sample(families, "okta_jwt_ratelimit_limited", rule="10") == 1
        assert families["okta_jwt_ratelimit_buckets"].label_values("limit") == {"0", "1"}
        assert families["okta_jwt_ratelimit_buckets"].label_values("rule") == {"10"}
    finally:
        stack.stop()


def check_introspection_labels(envoy: EnvoyClient, idp: IdpClient, provider: str) -> None:
    """Three requests with one opaque token (answers: a call, or the worker's cache) and one
    whose call fails (500), counted under the provider and class labels."""
    token = idp.mint_opaque()
    for _ in range(3):
        assert_allowed(envoy.get("/opaque", token))
    idp.introspect_fault("500", server=ORG)
    try:
        assert_denied(envoy.get("/opaque", idp.mint_opaque()), 503)
    finally:
        idp.introspect_fault("none", server=ORG)
    families = scrape(envoy)
    calls = families.get("okta_jwt_introspection_calls")
    assert calls is not None, sorted(families)
    assert calls.label_names == {"class", "provider"}, calls.samples[:3]
    assert calls.label_values("provider") == {provider}
    assert len(calls.label_values("class")) == 11, calls.label_values("class")

    def n(name: str, **labels: str) -> float:
        return sample(families, name, provider=provider, **labels)

    active = n("okta_jwt_introspection_calls", **{"class": "active"})
    # The cache is per worker: each of the three was a hit, or a miss that made one call.
    hits = n("okta_jwt_introspection_cache_hit")
    assert 1 <= active <= 3 and hits == 3 - active, (active, hits)
    assert n("okta_jwt_introspection_calls", **{"class": "status_5xx"}) == 1
    assert n("okta_jwt_introspection_calls", **{"class": "inactive"}) == 0
    assert n("okta_jwt_introspection_cache_miss") >= active
    assert sample(families, "okta_jwt_denied", reason="introspection_unavailable") == 1
    for gauge in ("in_flight", "cached", "breaker"):
        family = families[f"okta_jwt_introspection_{gauge}"]
        assert family.type == "gauge" and family.label_names == {"provider"}, family.samples
    assert n("okta_jwt_introspection_breaker") == 0  # one failure: closed
    # In an untagged name, Envoy's Prometheus output would turn the provider's `-` into `_`.
    assert not any(name.startswith("okta_jwt_introspection")
                   and name.endswith(provider.replace("-", "_")) for name in families), \
        sorted(families)
