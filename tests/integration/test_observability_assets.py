"""The Grafana dashboard and the Prometheus alert rules under deploy/observability/ (issue 12).

- The files parse: the dashboard is JSON with the structure Grafana imports; the rules and their
  unit tests are YAML that `promtool` accepts; every dashboard query is PromQL `promtool` accepts.
- `promtool test rules` runs the rules' unit tests (alerts fire, and only where they should).
- Every metric the dashboard, the rules and the rule tests reference is one the filter defines,
  with the labels they use, and the label values they name (reasons, fetch outcome classes)
  exist. What "defined" means is read two ways, which must agree: from the source
  (src/shell/metrics.rs names the stats, src/core/denial.rs the reasons) and from a real Envoy
  (this module's stack: envoy/filter.json.tmpl plus a provider that introspects, so that the
  introspection stats exist too; its /stats and /stats/prometheus, with the stats_tags of
  envoy-stats-tags.yml).
- A real Prometheus scrapes that Envoy with the rules loaded: every dashboard query runs on
  what it scraped (and the ones that plot traffic have data), every rule evaluates without
  error, and the alerts for the stack's `broken` provider (whose key URI answers 404) fire,
  naming that provider and no other, as does the alert for failed introspection calls.
- The runbook links of the alerts lead to sections of docs/troubleshooting.md, which has one
  section per reason code.

`promtool` and `prometheus` come with Debian's `prometheus` package (.ci/run installs it);
without them the tests that need them are skipped, saying so.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

import harness
from envoy_client import EnvoyClient
from test_schema import assert_accepted_by_both, okta_jwt  # noqa: F401 (fixture)
from idp_client import ORG, IdpClient
from test_stats_tags import Family, introspecting_provider, okta_families

REPO = harness.REPO
# The stack's provider that introspects (the mock IdP's org server), and its route.
INTROSPECTING = "org"
OPAQUE_PATH = "/opaque"
ASSETS = REPO / "deploy" / "observability"
DASHBOARD = ASSETS / "okta-jwt-dashboard.json"
RULES = ASSETS / "prometheus-rules.yml"
RULE_TESTS = ASSETS / "prometheus-rules.test.yml"
METRICS_RS = REPO / "src" / "shell" / "metrics.rs"
DENIAL_RS = REPO / "src" / "core" / "denial.rs"
TROUBLESHOOTING = REPO / "docs" / "troubleshooting.md"
# Labels Prometheus adds to every series when it scrapes a target.
SCRAPE_LABELS = {"instance", "job"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
PROMTOOL_TIMEOUT_S = 60
# Grafana's variables, replaced by what a query could see at run time.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "6h", "$provider": ".*"}


# --- what the assets reference ------------------------------------------------------------------

def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(d: dict) -> list[dict]:
    out = []
    for p in d.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))  # a collapsed row keeps its panels inside
    return out


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(where, PromQL, legend) of every panel target."""
    out = []
    for p in all_panels(dashboard()):
        for t in p.get("targets", []):
            out.append((f"panel {p['id']} {p['title']!r} {t['refId']}", t["expr"],
                        t.get("legendFormat", "")))
    return out


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def rule_test_series() -> list[str]:
    return [s["series"] for t in yaml.safe_load(RULE_TESTS.read_text())["tests"]
            for s in t["input_series"]]


_METRIC = re.compile(r"\b(okta_jwt_[a-z0-9_]+)\b\s*(\{[^}]*\})?")
_MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def references(expr: str) -> tuple[list[tuple[str, list[tuple[str, str, str]]]], set[str]]:
    """The metric selectors of a PromQL expression, each with its label matchers, and the label
    names the expression groups or matches on."""
    selectors = [(m.group(1), _MATCHER.findall(m.group(2) or "")) for m in _METRIC.finditer(expr)]
    grouping = {label.strip() for g in _GROUPING.findall(expr) for label in g.split(",")
                if label.strip()}
    return selectors, grouping


def templating_queries() -> list[tuple[str, str, str]]:
    """(where, metric, label) of the dashboard's label_values() variables."""
    out = []
    for v in dashboard()["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((okta_jwt_\w+),\s*(\w+)\)", q)
            assert m, f"variable {v['name']}: unexpected query {q!r}"
            out.append((f"variable {v['name']}", m.group(1), m.group(2)))
    return out


# --- what the filter defines ----------------------------------------------------------------------

def source_reasons() -> set[str]:
    """The reason codes: the names `Reason::as_str` gives (src/core/denial.rs)."""
    text = DENIAL_RS.read_text()
    body = re.search(r"fn as_str\(self\) -> &'static str \{(.*?)\n    \}", text, re.S)
    assert body, "fn as_str not found in denial.rs"
    names = set(re.findall(r'Reason::\w+\s*=>\s*"([a-z_]+)"', body.group(1)))
    assert len(names) >= 20, names
    return names


def source_stat_templates() -> list[str]:
    """The stat names src/shell/metrics.rs defines, `{...}` standing for a format argument."""
    templates = re.findall(r'"(okta_jwt_[^"]*)"', METRICS_RS.read_text())
    assert templates, "no okta_jwt_ stat name in metrics.rs"
    return sorted(set(templates))


def template_regex(template: str) -> re.Pattern:
    parts = re.split(r"\{[^}]*\}", template)
    return re.compile("[A-Za-z0-9_-]+".join(re.escape(p) for p in parts))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """This module's stack: the session stack's configuration (envoy/filter.json.tmpl) plus a
    provider that introspects on /opaque, so that every stat metrics.rs defines exists."""
    if harness.external_urls() is not None:
        pytest.skip("needs a stack of its own with an introspecting provider")

    def config(variables: dict[str, str]) -> dict:
        c = harness.render.load_filter_config(variables)
        assert INTROSPECTING not in c["providers"]
        c["providers"][INTROSPECTING] = introspecting_provider(variables["IDP_URL"])
        c["rules"].append({"match": {"prefix": OPAQUE_PATH}, "providers": [INTROSPECTING]})
        return c

    s = harness.start_stack(tmp_path_factory.mktemp("observability"), filter_config=config)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def envoy(stack) -> EnvoyClient:
    return EnvoyClient(stack.envoy_url, stack.admin_url)


@pytest.fixture(scope="module")
def idp(stack) -> IdpClient:
    return IdpClient(stack.idp_url)


def failed_introspection(envoy: EnvoyClient, idp: IdpClient) -> None:
    """One request whose introspection call gets a 500: 503 introspection_unavailable."""
    idp.introspect_fault("500", server=ORG)
    try:
        reply = envoy.get(OPAQUE_PATH, idp.mint_opaque())
    finally:
        idp.introspect_fault("none", server=ORG)
    assert reply.status == 503, reply


@pytest.fixture(scope="module")
def envoy_stats(envoy: EnvoyClient, idp: IdpClient) -> tuple[set[str], dict[str, Family]]:
    """(raw stat names, Prometheus families) of the filter in this module's Envoy, after an
    opaque token was introspected (active) and a call failed."""
    assert envoy.get(OPAQUE_PATH, idp.mint_opaque()).status == 200
    failed_introspection(envoy, idp)
    r = envoy.http.get(f"{envoy.admin_url}/stats", params={"filter": "okta_jwt_"},
                       timeout=envoy.timeout)
    r.raise_for_status()
    raw = {line.split(":", 1)[0] for line in r.text.splitlines() if line.strip()}
    raw = {n.removeprefix("wasmcustom.") for n in raw if "wasmcustom." in n}
    families = okta_families(envoy.prometheus())
    assert raw and families
    calls = {s.labels["class"]: s.value for s in families["okta_jwt_introspection_calls"].samples
             if s.labels["provider"] == INTROSPECTING}
    assert calls["active"] >= 1 and calls["status_5xx"] >= 1, calls
    return raw, families


# --- the files parse ------------------------------------------------------------------------------

def test_the_dashboard_is_a_grafana_dashboard():
    d = dashboard()
    assert d["uid"] and d["title"] and isinstance(d["schemaVersion"], int)
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = all_panels(d)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], f"{p['title']}: no query"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}" and t["expr"].strip()


def test_the_dashboard_has_the_panels_the_issue_asks_for():
    exprs = " ".join(e for _, e, _ in dashboard_queries())
    for needed in ("okta_jwt_allowed", "okta_jwt_denied", "by (reason)",
                   "okta_jwt_ratelimit_limited", "okta_jwt_token_cache_hit",
                   "okta_jwt_token_cache_miss", "okta_jwt_jwks_age_s",
                   "okta_jwt_jwks_fetch_failure", "okta_jwt_decision_time_us_bucket",
                   "histogram_quantile", "okta_jwt_introspection_calls", "by (provider, class)",
                   "okta_jwt_introspection_cache_hit", "okta_jwt_introspection_cache_miss",
                   "okta_jwt_introspection_breaker"):
        assert needed in exprs, needed


def test_the_rules_have_what_alertmanager_needs():
    names = [r["alert"] for r in rules()]
    assert len(names) == len(set(names)), names
    for r in rules():
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r["alert"]
        assert r["labels"]["severity"] in ("critical", "warning"), r["alert"]
        assert {"summary", "description", "runbook"} <= set(r["annotations"]), r["alert"]


def test_the_rules_cover_what_the_issue_asks_for():
    exprs = {r["alert"]: r["expr"] for r in rules()}
    text = " ".join(exprs.values())
    assert "okta_jwt_jwks_stale_in_s" in text and "okta_jwt_jwks_fetch_outcome" in text
    assert re.search(r'reason=~"[^"]*bad_signature[^"]*"', text)
    assert re.search(r'reason=~"[^"]*unknown_kid[^"]*"', text)
    assert "okta_jwt_ratelimit_limited" in text
    assert 'okta_jwt_denied{reason="introspection_unavailable"}' in exprs[
        "OktaJwtIntrospectionFailing"]
    assert "okta_jwt_introspection_breaker" in exprs["OktaJwtIntrospectionBreakerOpen"]
    assert "# - alert:" not in RULES.read_text(), "no rule waits commented out"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian package prometheus; .ci/run installs it)")
    return path


def run_promtool(*args: str, cwd: Path = ASSETS) -> str:
    r = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True,
                       timeout=PROMTOOL_TIMEOUT_S)
    output = r.stdout + r.stderr
    assert r.returncode == 0, f"promtool {' '.join(args)}:\n{output}"
    return output


def test_promtool_accepts_the_rules():
    output = run_promtool("check", "rules", RULES.name)
    assert f"SUCCESS: {len(rules())} rules found" in output, output


def test_promtool_unit_tests_of_the_rules_pass():
    output = run_promtool("test", "rules", RULE_TESTS.name)
    assert "SUCCESS" in output, output


def test_promtool_unit_tests_cover_every_alert():
    tested = {t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for t in case.get("alert_rule_test", [])
              if t.get("exp_alerts")}
    assert tested == {r["alert"] for r in rules()}


def substitute_grafana_variables(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


def test_promtool_accepts_every_dashboard_query(tmp_path):
    queries = dashboard_queries()
    group = {"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": substitute_grafana_variables(expr)}
        for i, (_, expr, _) in enumerate(queries)]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [group]}))
    output = run_promtool("check", "rules", str(path), cwd=tmp_path)
    assert f"SUCCESS: {len(queries)} rules found" in output, output


# --- every reference is defined -----------------------------------------------------------------

def test_the_source_and_envoy_define_the_same_stats(envoy_stats):
    raw, families = envoy_stats
    templates = source_stat_templates()
    regexes = {t: template_regex(t) for t in templates}
    for t, rx in regexes.items():
        assert any(rx.fullmatch(n) for n in raw), f"{t} (metrics.rs) is not among Envoy's stats"
    for name in raw:
        assert any(rx.fullmatch(name) for rx in regexes.values()), \
            f"Envoy has {name}, which no name in metrics.rs explains"
    assert families["okta_jwt_denied"].label_values("reason") == source_reasons(), \
        "the reason labels are not the reasons of denial.rs (is the .wasm stale?)"


def family_of(name: str, families: dict[str, Family]) -> tuple[Family, str]:
    """The family a sample name belongs to, and the suffix (histograms: _bucket ...)."""
    if name in families:
        return families[name], ""
    for suffix in HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if name.endswith(suffix) and families.get(base) and families[base].type == "histogram":
            return families[base], suffix
    raise AssertionError(f"{name} is not a metric the filter defines: {sorted(families)}")


def labels_of(family: Family, suffix: str) -> set[str]:
    labels = family.label_names - {"le"}
    return labels | SCRAPE_LABELS | ({"le"} if suffix == "_bucket" else set())


def check_value(where: str, family: Family, label: str, op: str, value: str) -> None:
    if "$" in value or label in SCRAPE_LABELS or label == "le":
        return
    known = family.label_values(label)
    if op in ("=", "!="):
        wanted = [value]
    elif re.fullmatch(r"[A-Za-z0-9_-]+(\|[A-Za-z0-9_-]+)*", value):
        wanted = value.split("|")
    else:
        return  # a real pattern (".*"): nothing to look up
    for v in wanted:
        assert v in known, f"{where}: {family.name}{{{label}{op}{value!r}}}: no {label} {v!r} " \
                           f"among {sorted(known)}"


def check_expression(where: str, expr: str, legend: str, families: dict[str, Family]) -> int:
    selectors, grouping = references(expr)
    assert selectors, f"{where}: no okta_jwt_ metric in {expr!r}"
    available = set()
    for name, matchers in selectors:
        family, suffix = family_of(name, families)
        labels = labels_of(family, suffix)
        available |= labels
        for label, op, value in matchers:
            assert label in labels, f"{where}: {name} has no label {label!r} ({sorted(labels)})"
            check_value(where, family, label, op, value)
    for label in grouping | set(_LEGEND.findall(legend)):
        assert label in available, f"{where}: label {label!r} is on none of its metrics"
    return len(selectors)


def test_every_dashboard_reference_is_defined(envoy_stats):
    _, families = envoy_stats
    checked = sum(check_expression(w, e, legend, families) for w, e, legend in dashboard_queries())
    for where, metric, label in templating_queries():
        family, suffix = family_of(metric, families)
        assert label in labels_of(family, suffix), f"{where}: {metric} has no label {label}"
    assert checked >= 20


def test_every_rule_reference_is_defined(envoy_stats):
    _, families = envoy_stats
    for r in rules():
        labels = " ".join(r["annotations"].values())
        check_expression(f"alert {r['alert']}", r["expr"], labels.replace("$labels.", ""),
                         families)


def test_the_rule_tests_use_the_series_envoy_exposes(envoy_stats):
    _, families = envoy_stats
    for series in rule_test_series():
        m = re.fullmatch(r"(okta_jwt_\w+)(\{.*\})", series)
        assert m, series
        family, suffix = family_of(m.group(1), families)
        labels = dict((k, v) for k, _, v in _MATCHER.findall(m.group(2)))
        assert SCRAPE_LABELS <= set(labels), f"{series}: scraped series have instance and job"
        assert set(labels) - SCRAPE_LABELS == family.label_names, \
            f"{series}: Envoy's {family.name} has the labels {sorted(family.label_names)}"
        for label, value in labels.items():
            if label in ("reason", "class"):
                check_value(series, family, label, "=", value)


# --- a real Prometheus -------------------------------------------------------------------------

PROMETHEUS_WAIT_S = 60  # scrapes and evaluations every second; a loaded machine may lag
# Dashboard queries that plot traffic or state, which must have data once traffic was sent.
# The others (rate limits, cache hits ...) are checked to run: this traffic may leave them 0.
MUST_HAVE_DATA = ("Allowed and denied requests", "Denied by reason", "Denied share (5m)",
                  "Denials by reason in the time range", "Decision time", "Key set age",
                  "Seconds until the keys go stale", "Usable keys",
                  "Introspection calls by class", "Introspection breaker")


class Prometheus:
    def __init__(self, url: str):
        self.url = url
        self.http = requests.Session()
        self.http.trust_env = False

    def api(self, path: str, **params) -> dict:
        r = self.http.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = r.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]


@pytest.fixture(scope="module")
def prometheus(stack, tmp_path_factory) -> Prometheus:
    """Prometheus scraping the session Envoy's /stats/prometheus every second, with the rules."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (Debian package prometheus; .ci/run installs it)")
    workdir = tmp_path_factory.mktemp("prometheus")
    shutil.copy(RULES, workdir / RULES.name)
    target = stack.admin_url.split("://", 1)[1]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [RULES.name],
        "scrape_configs": [{"job_name": "envoy", "metrics_path": "/stats/prometheus",
                            "static_configs": [{"targets": [target]}]}]}))
    port = harness.free_port()
    proc = harness.Process("prometheus", [binary, f"--config.file={workdir / 'prometheus.yml'}",
                                          f"--storage.tsdb.path={workdir / 'data'}",
                                          f"--web.listen-address=127.0.0.1:{port}"], workdir)
    try:
        url = f"http://127.0.0.1:{port}"
        harness.wait_until(lambda: harness.http_status(f"{url}/-/ready") == 200,
                           PROMETHEUS_WAIT_S, "Prometheus to be ready", abort=proc.exit_reason)
        prom = Prometheus(url)
        # Traffic must come after the first scrape, or every sample holds the same values.
        harness.wait_until(lambda: prom.query('up{job="envoy"} == 1'), PROMETHEUS_WAIT_S,
                           "Prometheus's first scrape of Envoy", abort=proc.exit_reason)
        yield prom
    finally:
        proc.stop()


@pytest.mark.local_only
def test_prometheus_scrapes_envoy_and_the_dashboard_queries_have_data(prometheus, envoy, idp):
    targets = prometheus.api("targets")["activeTargets"]
    assert [(t["health"], t["lastError"]) for t in targets] == [("up", "")], targets
    opaque = idp.mint_opaque()
    for _ in range(5):
        assert envoy.get("/api/orders", idp.mint()).status == 200
        assert envoy.get("/api/orders").status == 401
        assert envoy.get(OPAQUE_PATH, opaque).status == 200
    harness.wait_until(lambda: prometheus.query("increase(okta_jwt_allowed[1m]) > 0"),
                       PROMETHEUS_WAIT_S, "a scrape after the traffic")
    # Envoy publishes histograms at its stats flush (every 5 s).
    harness.wait_until(lambda: prometheus.query("rate(okta_jwt_decision_time_us_count[1m]) > 0"),
                       PROMETHEUS_WAIT_S, "decision times in Prometheus")
    for where, expr, _ in dashboard_queries():
        result = prometheus.query(substitute_grafana_variables(expr))
        if any(f"{title!r}" in where for title in MUST_HAVE_DATA):
            assert result, f"{where}: no data for {expr}"
            values = [float(r["value"][1]) for r in result]
            assert not any(v != v for v in values), f"{where}: NaN in {result}"
    by_reason = prometheus.query(
        substitute_grafana_variables(next(e for w, e, _ in dashboard_queries()
                                          if "'Denied by reason'" in w)))
    assert "missing_token" in {r["metric"]["reason"] for r in by_reason}, by_reason
    calls = prometheus.query(
        substitute_grafana_variables(next(e for w, e, _ in dashboard_queries()
                                          if "'Introspection calls by class'" in w)))
    assert {(INTROSPECTING, "active")} <= {(r["metric"]["provider"], r["metric"]["class"])
                                           for r in calls}, calls


@pytest.mark.local_only
def test_the_rules_evaluate_and_the_broken_provider_alerts(prometheus, envoy, idp):
    assert envoy.get("/broken", idp.mint(server="broken")).status == 503
    failed_introspection(envoy, idp)
    groups = prometheus.api("rules")["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(loaded) == {r["alert"] for r in rules()}, sorted(loaded)

    def alerts() -> list[dict] | None:
        found = prometheus.api("alerts")["alerts"]
        names = {a["labels"]["alertname"] for a in found}
        wanted = {"OktaJwtNoSigningKeys", "OktaJwtRequestsRefusedWithoutKeys",
                  "OktaJwtIntrospectionFailing"}
        return found if wanted <= names else None

    found = harness.wait_until(alerts, PROMETHEUS_WAIT_S, "the broken provider's alerts")
    for r in loaded.values():
        assert r["health"] == "ok", f"{r['name']}: {r.get('lastError')}"
    for a in found:
        # Pending alerts of healthy providers are allowed: a key set is stale for the moment
        # its routine refresh takes, which is what the rule's `for` is there for.
        if a["state"] == "firing":
            assert a["labels"].get("provider", "broken") == "broken", f"firing: {a}"
    no_keys = [a for a in found if a["labels"]["alertname"] == "OktaJwtNoSigningKeys"]
    assert [a["labels"]["provider"] for a in no_keys] == ["broken"], no_keys
    assert no_keys[0]["annotations"]["runbook"] == "docs/troubleshooting.md#jwks_unavailable"
    # One failed call: 503s, but the breaker stays closed.
    assert "OktaJwtIntrospectionBreakerOpen" not in {a["labels"]["alertname"] for a in found}


# --- the troubleshooting guide -----------------------------------------------------------------

EXAMPLES = REPO / "docs" / "examples" / "troubleshooting"
CLI_RUN_TIMEOUT_S = 30
# Reasons whose explain session cannot end in that denial, and why.
NOT_REPLAYABLE = {"rate_limited": "explain starts with full buckets, like a fresh Envoy",
                  "dpop_replay_full": "explain starts with an empty DPoP replay record",
                  "inactive_token": "explain makes no network call, so it never gets an "
                                    "introspection answer (active or not)"}


def guide_text() -> str:
    return TROUBLESHOOTING.read_text()


def guide_sessions() -> list[tuple[int, str, str]]:
    """(line, command, output) of every `$ okta-jwt ...` in the guide's console blocks."""
    out = []
    text = guide_text()
    for m in re.finditer(r"^```console\n(.*?)^```$", text, re.M | re.S):
        line = text.count("\n", 0, m.start()) + 2
        current = None
        for i, row in enumerate(m.group(1).splitlines()):
            if row.startswith("$ "):
                assert row.startswith("$ okta-jwt "), f"line {line + i}: not an okta-jwt command"
                current = [line + i, row[2:], []]
                out.append(current)
            else:
                assert current, f"line {line + i}: output before any command"
                current[2].append(row)
    return [(n, cmd, "\n".join(rows)) for n, cmd, rows in out]


def run_session(binary: Path, command: str) -> str:
    """Run a guide command in docs/examples/troubleshooting/ (`$(cat FILE)` is the file's
    content, as a shell would have it); stdout and stderr as a terminal shows them."""
    argv = shlex.split(command)
    assert argv[0] == "okta-jwt", command
    for i, arg in enumerate(argv):
        m = re.fullmatch(r"\$\(cat (\S+)\)", arg)
        if m:
            argv[i] = (EXAMPLES / m.group(1)).read_text().strip()
    r = subprocess.run([str(binary), *argv[1:]], cwd=EXAMPLES, capture_output=True, text=True,
                       timeout=CLI_RUN_TIMEOUT_S)
    return (r.stdout + r.stderr).rstrip("\n")


def reason_sections() -> dict[str, str]:
    """The text of each `### `reason`` section, up to the next section of its level or above."""
    text = guide_text()
    heads = list(re.finditer(r"^(#{2,3}) (.+)$", text, re.M))
    out = {}
    for i, h in enumerate(heads):
        m = re.fullmatch(r"`([a-z_]+)`", h.group(2).strip())
        if h.group(1) == "###" and m:
            end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
            out[m.group(1)] = text[h.end():end]
    return out

def github_anchor(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def guide_anchors() -> set[str]:
    return {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", TROUBLESHOOTING.read_text(),
                                                 re.M)}


def test_the_guide_has_a_section_per_reason_code():
    missing = sorted(source_reasons() - guide_anchors())
    assert not missing, f"docs/troubleshooting.md has no section for {missing}"


def test_runbook_links_lead_to_sections_of_the_guide():
    anchors = guide_anchors()
    for r in rules():
        path, _, anchor = r["annotations"]["runbook"].partition("#")
        assert path == "docs/troubleshooting.md", r["alert"]
        assert anchor in anchors, f"{r['alert']}: no section #{anchor} in {path}"


def test_every_reason_section_has_the_answer_the_log_the_stat_and_a_session():
    for reason, section in reason_sections().items():
        where = f"docs/troubleshooting.md, {reason}"
        assert "**Client sees**" in section, f"{where}: what the client saw"
        logs = [json.loads(b) for b in re.findall(r"^```json log\n(.*?)^```$", section,
                                                  re.M | re.S)]
        assert any(l.get("reason") == reason for l in logs), f"{where}: no log line of it"
        assert f'okta_jwt_denied{{reason="{reason}"}}' in section, f"{where}: no stat"
        sessions = re.findall(r"^\$ okta-jwt explain .*\n((?:(?!\$ |```).*\n)*)", section,
                              re.M)
        assert sessions, f"{where}: no okta-jwt explain session"
        if reason not in NOT_REPLAYABLE:
            assert any(re.match(rf"decision: deny \d{{3}} {reason}\n", s) for s in sessions), \
                f"{where}: no session ends in {reason}"


@pytest.mark.local_only
def test_the_guide_sessions_are_real_output(okta_jwt):
    sessions = guide_sessions()
    assert len(sessions) >= len(source_reasons()), len(sessions)
    for line, command, shown in sessions:
        actual = run_session(okta_jwt.binary, command)
        assert actual == shown, f"docs/troubleshooting.md:{line}: {command}\n--- shown\n{shown}" \
                                f"\n--- actual\n{actual}"


@pytest.mark.local_only
def test_the_example_configurations_are_valid(okta_jwt):
    configs = [p for p in EXAMPLES.glob("okta-jwt*.json")]
    assert len(configs) >= 3, configs
    for path in configs:
        assert_accepted_by_both(json.loads(path.read_text()), okta_jwt, str(path.relative_to(REPO)))


_LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", ["troubleshooting.md", "observability.md"])
def test_relative_links_of_the_guides_resolve(doc):
    source = REPO / "docs" / doc
    for target in _LINK.findall(source.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (source.parent / path).resolve() if path else source
        assert dest.exists(), f"{doc}: link to {target}: no such file"
        if anchor and dest.suffix == ".md":
            anchors = {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", dest.read_text(),
                                                            re.M)}
            assert anchor in anchors, f"{doc}: link to {target}: no such section"
