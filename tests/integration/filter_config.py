"""Filter configurations of the tests' own, for `harness.start_stack(filter_config=...)`
(the session stack uses envoy/filter.json.tmpl as it is)."""

from __future__ import annotations

REALM = "api"  # envoy/filter.json.tmpl


def idp_provider(idp_url: str, server: str = "default", **extra) -> dict:
    """A provider for the mock IdP's authorization server `server`, keys fetched through the
    stack's `okta_idp` cluster; `extra` adds or overrides provider fields."""
    return {"issuer": f"{idp_url}/oauth2/{server}", "audiences": ["api://default"],
            "jwks": {"uri": f"{idp_url}/oauth2/{server}/v1/keys", "cluster": "okta_idp"},
            **extra}
