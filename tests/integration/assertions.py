"""What the tests expect of Envoy's replies: reached the upstream, or denied by the filter with
the right status, challenge and error body (SPEC.md, Responses)."""

from __future__ import annotations

import re

from envoy_client import Reply
from filter_config import REALM

CHALLENGE_NO_TOKEN = f'Bearer realm="{REALM}"'
CHALLENGE_INVALID_TOKEN = re.compile(
    rf'Bearer realm="{REALM}", error="invalid_token", error_description="[^"\\]+"')


def challenge_insufficient_scope(scopes: str) -> str:
    return f'Bearer realm="{REALM}", error="insufficient_scope", scope="{scopes}"'


ABSENT = object()  # sentinel: the header must not be in the response


def is_echo(reply: Reply) -> bool:
    try:
        body = reply.json()
    except ValueError:
        return False
    return isinstance(body, dict) and {"method", "path", "headers"} <= body.keys()


def assert_allowed(reply: Reply) -> dict:
    """The request reached the echo upstream; returns what the upstream received."""
    assert reply.status == 200 and is_echo(reply), reply
    return reply.json()


def assert_denied(reply: Reply, status: int, *, challenge=ABSENT,
                  error: str | None = None, token: str | None = None) -> dict:
    """A denial made by the filter: exact status, `WWW-Authenticate` (an exact string, a
    compiled pattern that must match all of it, or ABSENT), JSON error body."""
    assert reply.status == status, reply
    assert not is_echo(reply), f"the request reached the upstream: {reply!r}"
    www = reply.header_all("www-authenticate")
    if challenge is ABSENT:
        assert www == [], reply
    elif isinstance(challenge, re.Pattern):
        assert len(www) == 1 and challenge.fullmatch(www[0]), reply
    else:
        assert www == [challenge], reply
    content_type = reply.header("content-type") or ""
    assert content_type.split(";")[0].strip().lower() == "application/json", reply
    body = reply.json()
    assert isinstance(body, dict), reply
    for key in ("error", "error_description"):
        assert isinstance(body.get(key), str) and body[key], reply
    if error is not None:
        assert body["error"] == error, reply
    if token is not None:
        assert token not in reply.body.decode(errors="replace"), "the denial echoes the token"
        assert all(token not in v for _, v in reply.headers), "a header echoes the token"
    return body


def assert_no_token(reply: Reply) -> dict:
    return assert_denied(reply, 401, challenge=CHALLENGE_NO_TOKEN)


def assert_invalid_token(reply: Reply, token: str | None = None) -> dict:
    return assert_denied(reply, 401, challenge=CHALLENGE_INVALID_TOKEN, error="invalid_token",
                         token=token)


def assert_insufficient_scope(reply: Reply, scopes: str) -> dict:
    return assert_denied(reply, 403, challenge=challenge_insufficient_scope(scopes),
                         error="insufficient_scope")


def assert_claim_denied(reply: Reply) -> dict:
    return assert_denied(reply, 403)
