"""Filter configurations of the tests' own, for `harness.start_stack(filter_config=...)`
(the session stack uses envoy/filter.json.tmpl as it is)."""

from __future__ import annotations

from typing import Callable

REALM = "api"  # envoy/filter.json.tmpl


def provider(idp_url: str, server: str = "default", *, discovery: bool = False,
             jwks: dict | None = None, **fields) -> dict:
    """A provider for the mock IdP's authorization server `server`: audience api://default,
    keys fetched through the stack's `okta_idp` cluster from the server's keys URI (or found
    by discovery). `jwks` adds key-set fields (timeouts, intervals), `fields` other provider
    fields (algorithms, ...)."""
    source = {"discovery": True} if discovery else {"uri": f"{idp_url}/oauth2/{server}/v1/keys"}
    return {"issuer": f"{idp_url}/oauth2/{server}", "audiences": ["api://default"],
            "jwks": {**source, "cluster": "okta_idp", **(jwks or {})}, **fields}


def filter_config(providers: dict[str, dict], rules: list[dict],
                  **fields) -> Callable[[dict[str, str]], dict]:
    """The configuration builder harness.start_stack calls with the template variables (the
    IdP's URL is known only then). `providers` maps each provider's name to the keyword
    arguments of `provider` (server, discovery, jwks, other fields); `rules` are taken as they
    are; `fields` are further top-level fields (signature_backend, ...)."""
    def build(variables: dict[str, str]) -> dict:
        idp_url = variables["IDP_URL"]
        return {"providers": {name: provider(idp_url, **spec) for name, spec in providers.items()},
                "rules": rules, "realm": REALM, **fields}
    return build
