"""Deployment files (issue 11): every YAML in the repository parses; the manifests under
deploy/ have the fields their kind needs and agree with each other (the cluster the filter
names is the one the mesh or the proxy provides, with TLS to the right host); the filter
configuration each one embeds passes the schema, `okta-jwt validate` and the real filter
inside `envoy --mode validate`; envoy/production.yaml and the rendered test bootstrap pass
`envoy --mode validate` with the .wasm that `make build` wrote.

Nothing here talks to Kubernetes: the Istio and Envoy Gateway manifests are checked for shape
and consistency, not applied.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

import harness
import render  # envoy/render.py, importable once harness is
from test_schema import (REPO, TEMPLATE_VARIABLES, assert_accepted_by_both, markdown_blocks,
                         markdown_files, okta_jwt, pending_marks)  # noqa: F401 (fixture)

DEPLOY = REPO / "deploy"
PRODUCTION = REPO / "envoy" / "production.yaml"
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
ENVOY_VALIDATE_TIMEOUT_S = 180
WASM_FILTER = "envoy.filters.http.wasm"
ROUTER = "envoy.filters.http.router"
# Tests that run Envoy or okta-jwt (built here) cannot run where only the stack is.
needs_tools = pytest.mark.local_only


# --- every YAML parses ----------------------------------------------------------------------

def tracked(*patterns: str) -> list[Path]:
    """Files under version control (committed or staged) matching the patterns."""
    out = subprocess.run(["git", "ls-files", "-z", "--", *patterns], cwd=REPO,
                         capture_output=True, check=True).stdout.decode()
    return sorted({REPO / p for p in out.split("\0") if p})


def yaml_files() -> list[Path]:
    files = set(tracked("*.yaml", "*.yml", "*.yaml.tmpl", "*.yml.tmpl"))
    files.update(DEPLOY.rglob("*.yaml"))
    files.add(PRODUCTION)
    return sorted(files)


def load_all(text: str) -> list[Any]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def yaml_text(path: Path) -> str:
    text = path.read_text()
    if path.name.endswith(".tmpl"):
        # Placeholders stand where scalars go; any scalar keeps the document's structure.
        text = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", "x", text)
    return text


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_yaml_file_parses(path: Path):
    docs = load_all(yaml_text(path))
    assert docs, f"{path} holds no YAML document"
    assert all(isinstance(d, dict) for d in docs), f"{path}: a document is not a mapping"


def _markdown_yaml_params() -> list:
    params = []
    for path in markdown_files():
        for lang, _, body, line in markdown_blocks(path):
            if lang in ("yaml", "yml"):
                where = f"{path.relative_to(REPO)}:{line}"
                params.append(pytest.param(where, body, id=where))
    return params


@pytest.mark.parametrize("where, body", _markdown_yaml_params())
def test_yaml_blocks_in_the_docs_parse(where, body):
    try:
        docs = load_all(body)
    except yaml.YAMLError as e:
        pytest.fail(f"{where}: {e}")
    assert docs, where


# --- the manifests --------------------------------------------------------------------------

def manifests() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for i, doc in enumerate(load_all(path.read_text())):
            out.append((f"{path.relative_to(REPO)}#{i}", doc))
    return out


MANIFESTS = manifests()


def of_kind(kind: str, under: str) -> list[dict]:
    return [m for where, m in MANIFESTS if m.get("kind") == kind and where.startswith(under)]


def get(node: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def need(m: dict, dotted: str, kind: type | tuple = object) -> Any:
    value = get(m, dotted)
    assert value is not None, f"{m.get('kind')} {get(m, 'metadata.name')}: {dotted} is missing"
    assert isinstance(value, kind), f"{m.get('kind')}: {dotted} is not {kind}: {value!r}"
    return value


HEX64 = re.compile(r"^[a-f0-9]{64}$")
API_VERSIONS = {
    "WasmPlugin": {"extensions.istio.io/v1alpha1"},
    "ServiceEntry": {"networking.istio.io/v1", "networking.istio.io/v1beta1",
                     "networking.istio.io/v1alpha3"},
    "DestinationRule": {"networking.istio.io/v1", "networking.istio.io/v1beta1",
                        "networking.istio.io/v1alpha3"},
    "EnvoyExtensionPolicy": {"gateway.envoyproxy.io/v1alpha1"},
    "EnvoyProxy": {"gateway.envoyproxy.io/v1alpha1"},
}


def check_wasmplugin(m: dict) -> None:
    url = need(m, "spec.url", str)
    assert url.startswith("oci://"), f"WasmPlugin url is not an OCI image: {url}"
    assert HEX64.match(need(m, "spec.sha256", str)), "sha256 is not 64 lower-case hex digits"
    assert need(m, "spec.phase") == "AUTHN"
    assert need(m, "spec.failStrategy") == "FAIL_CLOSE"
    need(m, "spec.pluginConfig", dict)
    targets = [k for k in ("selector", "targetRefs", "targetRef") if get(m, f"spec.{k}")]
    assert len(targets) == 1, f"WasmPlugin needs exactly one of selector and targetRefs: {targets}"
    for sel in get(m, "spec.match") or []:
        assert sel.get("mode") in ("CLIENT", "SERVER", "CLIENT_AND_SERVER"), sel
    if get(m, "spec.selector"):
        need(m, "spec.selector.matchLabels", dict)
        # A sidecar plugin must only see inbound requests (docs/deploy-istio.md).
        assert [s.get("mode") for s in get(m, "spec.match") or []] == ["SERVER"]


def check_serviceentry(m: dict) -> None:
    hosts = need(m, "spec.hosts", list)
    assert hosts and all(isinstance(h, str) and h for h in hosts)
    ports = need(m, "spec.ports", list)
    for p in ports:
        assert isinstance(p.get("number"), int) and 0 < p["number"] < 65536, p
        assert isinstance(p.get("name"), str) and p["name"], p
        assert p.get("protocol") in ("HTTP", "HTTPS", "HTTP2", "GRPC", "TLS", "TCP"), p
    assert need(m, "spec.resolution") in ("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN")
    assert need(m, "spec.location") in ("MESH_EXTERNAL", "MESH_INTERNAL")


def tls_settings(dr: dict, port: int) -> dict | None:
    for pls in get(dr, "spec.trafficPolicy.portLevelSettings") or []:
        if get(pls, "port.number") == port:
            return pls.get("tls")
    return get(dr, "spec.trafficPolicy.tls")


def check_destinationrule(m: dict) -> None:
    need(m, "spec.host", str)
    policy = need(m, "spec.trafficPolicy", dict)
    tls = [p.get("tls") for p in policy.get("portLevelSettings", [])] + [policy.get("tls")]
    tls = [t for t in tls if t]
    assert tls, "DestinationRule without TLS settings"
    for t in tls:
        assert t.get("mode") in ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"), t
        assert t.get("insecureSkipVerify") is not True, "certificate checks must stay on"


def check_envoyextensionpolicy(m: dict) -> None:
    targets = get(m, "spec.targetRefs") or ([get(m, "spec.targetRef")] if get(m, "spec.targetRef")
                                            else [])
    assert targets, "EnvoyExtensionPolicy needs targetRefs"
    for t in targets:
        assert t.get("group") == "gateway.networking.k8s.io", t
        assert t.get("kind") in ("Gateway", "HTTPRoute", "GRPCRoute"), t
        assert t.get("name"), t
    wasm = need(m, "spec.wasm", list)
    assert wasm
    for w in wasm:
        code = need(w, "code", dict)
        assert code.get("type") in ("HTTP", "Image"), code
        source = code.get("image" if code["type"] == "Image" else "http")
        assert isinstance(source, dict) and source.get("url"), code
        if code["type"] == "Image":
            assert "://" not in source["url"], f"image urls have no scheme: {source['url']}"
        if "sha256" in source:
            assert HEX64.match(source["sha256"]), source
        assert w.get("failOpen", False) is False, "the filter must fail closed"
        need(w, "config", dict)


def check_envoyproxy(m: dict) -> None:
    boot = need(m, "spec.bootstrap", dict)
    assert boot.get("type") in ("Merge", "Replace", "JSONPatch"), boot
    if boot["type"] in ("Merge", "Replace"):
        assert isinstance(yaml.safe_load(boot.get("value", "")), dict), "bootstrap value is not YAML"


KIND_CHECKS = {
    "WasmPlugin": check_wasmplugin,
    "ServiceEntry": check_serviceentry,
    "DestinationRule": check_destinationrule,
    "EnvoyExtensionPolicy": check_envoyextensionpolicy,
    "EnvoyProxy": check_envoyproxy,
}


def test_the_deliverables_are_there():
    kinds = {(where.split("/")[1], m.get("kind")) for where, m in MANIFESTS}
    assert {("istio", "WasmPlugin"), ("istio", "ServiceEntry"), ("istio", "DestinationRule"),
            ("envoy-gateway", "EnvoyExtensionPolicy"), ("envoy-gateway", "EnvoyProxy")} <= kinds


@pytest.mark.parametrize("where, manifest", MANIFESTS, ids=[w for w, _ in MANIFESTS])
def test_manifest_has_the_fields_its_kind_needs(where, manifest):
    kind = manifest.get("kind")
    assert kind in KIND_CHECKS, f"{where}: no check for kind {kind!r}: add one to KIND_CHECKS"
    assert manifest.get("apiVersion") in API_VERSIONS[kind], f"{where}: apiVersion"
    assert re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", need(manifest, "metadata.name", str))
    KIND_CHECKS[kind](manifest)


def embedded_configs() -> list[tuple[str, dict, dict]]:
    """(where, manifest, filter configuration) for every configuration a manifest carries."""
    out = []
    for where, m in MANIFESTS:
        if m.get("kind") == "WasmPlugin":
            out.append((where, m, get(m, "spec.pluginConfig")))
        if m.get("kind") == "EnvoyExtensionPolicy":
            for i, w in enumerate(get(m, "spec.wasm") or []):
                out.append((f"{where} wasm[{i}]", m, w.get("config")))
    return out


EMBEDDED = embedded_configs()


def remote_providers(config: dict) -> list[tuple[str, dict]]:
    return [(name, p) for name, p in config["providers"].items()
            if "inline" not in p.get("jwks", {})]


def key_host(provider: dict) -> str:
    """The host the filter fetches from: jwks.uri's, or the issuer's for discovery."""
    return urlsplit(provider["jwks"].get("uri") or provider["issuer"]).hostname


@needs_tools
@pytest.mark.parametrize("where, config",
                         [pytest.param(w, c, id=w, marks=pending_marks(c)) for w, _, c in EMBEDDED])
def test_embedded_configuration_passes_the_schema_and_the_filter(where, config, okta_jwt):
    assert isinstance(config, dict), f"{where}: no filter configuration"
    # YAML can turn unquoted values into non-strings; the schema sees what the filter will.
    assert_accepted_by_both(json.loads(json.dumps(config)), okta_jwt, where)


def test_istio_cluster_names_the_service_entry_and_tls_is_originated():
    checked = 0
    for where, plugin, config in EMBEDDED:
        if plugin.get("kind") != "WasmPlugin":
            continue
        ns = get(plugin, "metadata.namespace")
        for name, p in remote_providers(config):
            cluster = p["jwks"]["cluster"]
            m = re.fullmatch(r"outbound\|(\d+)\|\|([^|]+)", cluster)
            assert m, f"{where}: providers.{name}.jwks.cluster {cluster!r} is not outbound|<port>||<host>"
            port, host = int(m.group(1)), m.group(2)
            assert host == key_host(p), f"{where}: the cluster's host is not the key URI's host"
            entries = [se for se in of_kind("ServiceEntry", "deploy/istio")
                       if host in se["spec"]["hosts"] and get(se, "metadata.namespace") == ns]
            assert entries, f"no ServiceEntry for {host} in namespace {ns}"
            ports = [pt for se in entries for pt in se["spec"]["ports"] if pt["number"] == port]
            assert ports, f"no ServiceEntry port {port} for {host}"
            # The filter speaks plain HTTP to the cluster; the sidecar adds TLS.
            assert ports[0]["protocol"] == "HTTP", ports[0]
            for se in entries:
                assert set(se["spec"].get("exportTo", ["*"])) & {".", "*", ns}
            rules = [dr for dr in of_kind("DestinationRule", "deploy/istio")
                     if dr["spec"]["host"] == host and get(dr, "metadata.namespace") == ns]
            assert rules, f"no DestinationRule for {host}"
            tls = tls_settings(rules[0], port)
            assert tls and tls.get("mode") == "SIMPLE", f"no TLS origination on port {port}: {tls}"
            assert tls.get("sni") == host, tls
            assert host in tls.get("subjectAltNames", [host]), tls
            assert port == 443, "the contract's cluster is outbound|443||<okta host>"
            checked += 1
    assert checked, "no WasmPlugin with a remote provider"


def bootstrap_clusters(envoy_proxy: dict) -> list[dict]:
    return yaml.safe_load(envoy_proxy["spec"]["bootstrap"]["value"])["static_resources"]["clusters"]


def assert_tls_cluster_to(cluster: dict, host: str, where: str) -> None:
    addresses = [get(ep, "endpoint.address.socket_address")
                 for e in get(cluster, "load_assignment.endpoints") or []
                 for ep in e.get("lb_endpoints", [])]
    assert addresses and all(a["address"] == host and a["port_value"] == 443 for a in addresses), \
        f"{where}: cluster {cluster['name']} does not go to {host}:443: {addresses}"
    tls = get(cluster, "transport_socket.typed_config")
    assert tls and tls.get("@type", "").endswith("UpstreamTlsContext"), f"{where}: no TLS"
    assert tls.get("sni") == host, f"{where}: SNI {tls.get('sni')!r}, not {host}"
    ctx = tls.get("common_tls_context", {})
    assert get(ctx, "tls_params.tls_minimum_protocol_version") in ("TLSv1_2", "TLSv1_3"), where
    validation = ctx.get("validation_context", {})
    assert get(validation, "trusted_ca.filename"), f"{where}: the server certificate is not checked"
    sans = [get(s, "matcher.exact") for s in validation.get("match_typed_subject_alt_names", [])]
    assert host in sans, f"{where}: the certificate's host name is not checked"


def test_envoy_gateway_cluster_is_the_one_the_envoy_proxy_adds():
    proxies = of_kind("EnvoyProxy", "deploy/envoy-gateway")
    clusters = {c["name"]: c for p in proxies for c in bootstrap_clusters(p)}
    checked = 0
    for where, m, config in EMBEDDED:
        if m.get("kind") != "EnvoyExtensionPolicy":
            continue
        for name, p in remote_providers(config):
            cluster = p["jwks"]["cluster"]
            assert cluster in clusters, f"{where}: providers.{name}.jwks.cluster {cluster!r} " \
                                        f"is not added by any EnvoyProxy: {sorted(clusters)}"
            assert_tls_cluster_to(clusters[cluster], key_host(p), where)
            checked += 1
    assert checked


# --- real Envoy -------------------------------------------------------------------------------

def ca_bundle() -> str:
    if Path(SYSTEM_CA).is_file():
        return SYSTEM_CA
    import certifi  # a dependency of requests, in the venv
    return certifi.where()


def envoy_validate(bootstrap: dict | str, tmp_path: Path, name: str) -> str:
    """`envoy --mode validate` on the bootstrap (the real .wasm, the local CA bundle); returns
    Envoy's output, fails the test when Envoy refuses it."""
    text = bootstrap if isinstance(bootstrap, str) else yaml.safe_dump(bootstrap)
    text = text.replace(SYSTEM_CA, ca_bundle())
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    r = subprocess.run([str(harness.envoy_bin()), "--mode", "validate", "-c", str(path),
                        "--log-level", "info"], capture_output=True, text=True,
                       timeout=ENVOY_VALIDATE_TIMEOUT_S)
    output = r.stdout + r.stderr
    assert r.returncode == 0, f"envoy --mode validate refused {name}:\n{output[-3000:]}"
    return output


def production() -> dict:
    return yaml.safe_load(PRODUCTION.read_text())


def http_filters(bootstrap: dict) -> list[dict]:
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    return hcm["typed_config"]["http_filters"]


def with_wasm(bootstrap: dict, config: dict | None = None) -> dict:
    """The bootstrap with the .wasm `make build` wrote (and another filter configuration)."""
    bootstrap = copy.deepcopy(bootstrap)
    wasm = next(f for f in http_filters(bootstrap) if f["name"] == WASM_FILTER)
    plugin = wasm["typed_config"]["config"]
    plugin["vm_config"]["code"]["local"]["filename"] = str(harness.wasm_path())
    if config is not None:
        plugin["configuration"]["value"] = json.dumps(config)
    return bootstrap


def test_production_bootstrap_is_what_the_docs_promise():
    b = production()
    assert get(b, "admin.address.socket_address.address") in ("127.0.0.1", "::1"), \
        "the admin interface must listen on localhost only"
    filters = http_filters(b)
    assert filters[0]["name"] == WASM_FILTER and filters[-1]["name"] == ROUTER
    plugin = filters[0]["typed_config"]["config"]
    assert plugin.get("fail_open") is False, "fail_open must be false, explicitly"
    assert get(plugin, "vm_config.runtime") == "envoy.wasm.runtime.v8"
    config = json.loads(plugin["configuration"]["value"])
    clusters = {c["name"]: c for c in b["static_resources"]["clusters"]}
    for name, p in remote_providers(config):
        assert p["jwks"]["cluster"] in clusters, f"providers.{name}: no cluster {p['jwks']['cluster']}"
        assert_tls_cluster_to(clusters[p["jwks"]["cluster"]], key_host(p), "envoy/production.yaml")


@needs_tools
def test_production_configuration_passes_the_schema_and_the_filter(okta_jwt):
    plugin = http_filters(production())[0]["typed_config"]["config"]
    config = json.loads(plugin["configuration"]["value"])
    assert_accepted_by_both(config, okta_jwt, "envoy/production.yaml")


@needs_tools
def test_production_bootstrap_passes_envoy_validate(tmp_path):
    output = envoy_validate(with_wasm(production()), tmp_path, "production")
    # Validation loaded the module and ran the filter's configuration check.
    assert "configured 1 provider(s)" in output, output[-2000:]


@needs_tools
def test_envoy_validate_runs_the_filter_check(tmp_path):
    # Control for the test above and those below: a configuration the filter refuses makes
    # validation fail, naming the field.
    bad = json.loads(http_filters(production())[0]["typed_config"]["config"]["configuration"]["value"])
    bad["providers"]["okta"]["audiences"] = []
    with pytest.raises(AssertionError, match="providers.okta.audiences: must not be empty"):
        envoy_validate(with_wasm(production(), bad), tmp_path, "refused")


@needs_tools
@pytest.mark.parametrize("where, config",
                         [pytest.param(w, c, id=w, marks=pending_marks(c)) for w, _, c in EMBEDDED])
def test_embedded_configuration_loads_in_envoy(where, config, tmp_path):
    output = envoy_validate(with_wasm(production(), json.loads(json.dumps(config))), tmp_path,
                            re.sub(r"\W+", "-", where))
    assert "invalid configuration" not in output


@needs_tools
def test_envoy_gateway_bootstrap_clusters_pass_envoy_validate(tmp_path):
    for proxy in of_kind("EnvoyProxy", "deploy/envoy-gateway"):
        boot = {"admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                          "port_value": 0}}},
                "static_resources": {"clusters": bootstrap_clusters(proxy)}}
        envoy_validate(boot, tmp_path, f"envoy-proxy-{proxy['metadata']['name']}")


@needs_tools
def test_the_test_bootstrap_template_renders_and_passes_envoy_validate(tmp_path):
    variables = {"BIND_ADDRESS": "127.0.0.1", "LISTEN_PORT": "10000", "ADMIN_PORT": "9901",
                 "WASM_PATH": str(harness.wasm_path()), "UPSTREAM_HOST": "127.0.0.1",
                 "UPSTREAM_PORT": "8081", "IDP_HOST": "127.0.0.1", "IDP_PORT": "8080",
                 "IDP_URL": TEMPLATE_VARIABLES["IDP_URL"]}
    text = render.render(tmp_path / "envoy.yaml", variables)
    output = envoy_validate(text, tmp_path, "envoy-template")
    assert re.search(r"configured \d+ provider\(s\)", output), output[-2000:]
