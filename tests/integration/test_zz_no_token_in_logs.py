"""Never a token in a log (SPEC "Observability"): after every other test of the session (this
file sorts last, and pytest runs files in that order), every Envoy log the suite wrote, the
filter's decision log included, is searched for every token the suite minted (opaque ones too:
43 characters, taken whole) and for the introspection client's secret."""

import base64

import pytest

from idp_client import DEMO_CLIENT, MINTED

pytestmark = pytest.mark.local_only

# Shorter signatures could match by chance; every RS/PS signature is 342+ characters.
MIN_SIGNATURE_CHARS = 40


def test_no_minted_token_appears_in_any_envoy_log(tmp_path_factory, stack):
    logs = sorted(tmp_path_factory.getbasetemp().rglob("envoy*.log"))
    assert logs, "no Envoy log found: the search would prove nothing"
    signatures = {t.rsplit(".", 1)[-1] for t in MINTED}
    signatures = {s for s in signatures if len(s) >= MIN_SIGNATURE_CHARS}
    if not signatures:
        pytest.skip("no token was minted in this session (the test was run alone)")
    # The secret test_introspection.py's filters send, alone and as Basic credentials.
    secrets = {DEMO_CLIENT[1], base64.b64encode(":".join(DEMO_CLIENT).encode()).decode()}
    decision_lines = 0
    found = []
    for log in logs:
        text = log.read_text(errors="replace")
        decision_lines += text.count('{"decision":')
        found += [f"{log.name}: ...{s[-12:]}" for s in signatures if s in text]
        found += [f"{log.name}: the client secret" for s in secrets if s in text]
    assert decision_lines > 0, "no decision log line: the search would prove nothing"
    assert not found, found
