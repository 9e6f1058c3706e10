#!/usr/bin/env python3
"""Collects the text test vectors of the repository into fuzz/seeds/ (fuzz/README.md):
tokens and key sets from the native tests, configurations from docs/ and schema/, attack
paths from the integration tests. Fixture-signed seeds come from examples/fixture_seeds.rs."""

import hashlib
import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


def rust_strings(path):
    text = (ROOT / path).read_text()
    out = re.findall(r'r#"(.*?)"#', text, re.S)
    out += re.findall(r'"((?:[^"\\\n]|\\.)*)"', text)
    return out


def main():
    # Tokens: every compact JWS literal in the native tests.
    for path in ["src/core/test_keys.rs", "src/core/crypto/known_answer.rs",
                 "src/core/token/dpop.rs", "src/core/decision/log.rs"]:
        for s in rust_strings(path):
            for tok in re.findall(r"eyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*", s):
                write("token", tok)
                write("dpop", "R" + tok)
    # Key sets and single keys (wrapped in a set).
    for s in rust_strings("src/core/test_keys.rs"):
        s = s.strip()
        if s.startswith("{"):
            try:
                doc = json.loads(s)
            except ValueError:
                continue
            write("jwks", json.dumps(doc if "keys" in doc else {"keys": [doc]}))
    # Configurations: documented examples, the schema's examples, the deployment templates'
    # JSON files.
    for p in sorted((ROOT / "docs" / "examples").rglob("*.json")) + [ROOT / "docker/compose-filter.json"]:
        write("config", p.read_bytes())
    schema = json.loads((ROOT / "schema/config.schema.json").read_text())
    for ex in schema.get("examples", []):
        write("config", json.dumps(ex))
    # Paths: every literal starting with "/" in the path and attack tests, one per line of a
    # path_match seed (the first line is the path).
    for path in ["tests/integration/test_paths.py", "tests/integration/test_attacks.py"]:
        text = (ROOT / path).read_text()
        for s in set(re.findall(r'"(/[^"\s]*)"', text)):
            write("path_match", s + "\n")
    # Queries and cookies: first line the query, second the cookie header.
    for q, c in [("access_token=a&x=1", "at=a; b=c"),
                 ("access%5Ftoken=a&access_token=b", 'at="q"; at=; x'),
                 ("a+b=%20&=&&access_token", " at = v ;;at=w"),
                 ("x=%zz&access_token=%41", "\tat=1\t; other=2")]:
        write("query_cookie", f"{q}\n{c}\n")
    for uri in ["https://API.example:443/orders/7?x#y", "http://a:80", "https://u@h/x",
                "HTTPS://h:443:443/"]:
        write("dpop", "U" + uri)


if __name__ == "__main__":
    main()
