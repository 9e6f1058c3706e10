#!/usr/bin/env python3
"""Render the Envoy bootstrap (and the filter configuration it embeds) from templates.

    python3 envoy/render.py --out envoy.yaml --var NAME=VALUE ... [--filter-config FILE]

`${NAME}` placeholders are replaced by `--var` values. The filter configuration file is
rendered with the same variables, checked to be JSON, compacted and substituted for
`${FILTER_CONFIG}` as a JSON string literal (which YAML reads as a double-quoted scalar).
A placeholder left without a value, or a `--var` that no template uses, is an error.
Standard library only: the compose `render` service runs it on a bare python image.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENVOY_TEMPLATE = HERE / "envoy.yaml.tmpl"
FILTER_TEMPLATE = HERE / "filter.json.tmpl"

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RenderError(Exception):
    pass


def placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))


def substitute(text: str, variables: dict[str, str], source: str = "template") -> str:
    """Replace every ${NAME} in one pass (values are never re-scanned)."""
    missing = sorted(placeholders(text) - variables.keys())
    if missing:
        raise RenderError(f"{source}: no value for {', '.join('${%s}' % m for m in missing)}")
    return _PLACEHOLDER.sub(lambda m: variables[m.group(1)], text)


def load_filter_config(variables: dict[str, str], path: Path = FILTER_TEMPLATE) -> dict:
    text = substitute(Path(path).read_text(), variables, str(path))
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RenderError(f"{path}: not JSON after rendering: {e}") from None


def envoy_config(
    variables: dict[str, str], filter_config: dict, template: Path = ENVOY_TEMPLATE
) -> str:
    compact = json.dumps(filter_config, separators=(",", ":"))
    return substitute(
        Path(template).read_text(),
        {**variables, "FILTER_CONFIG": json.dumps(compact)},
        str(template),
    )


def render(
    out: Path | str,
    variables: dict[str, str],
    filter_config: dict | None = None,
    filter_config_path: Path | str | None = None,
    template: Path | str = ENVOY_TEMPLATE,
) -> str:
    """Write the rendered bootstrap to `out` and return its text.

    The filter configuration is `filter_config` (already a dict, e.g. a test's variation)
    or else rendered from `filter_config_path` (default: envoy/filter.json.tmpl).
    """
    filter_path = Path(filter_config_path or FILTER_TEMPLATE)
    used = placeholders(Path(template).read_text()) | placeholders(filter_path.read_text())
    if filter_config is None:
        filter_config = load_filter_config(variables, filter_path)
    unused = sorted(variables.keys() - used)
    if unused:
        raise RenderError(f"variables used by no template: {', '.join(unused)}")
    text = envoy_config(variables, filter_config, Path(template))
    Path(out).write_text(text)
    return text


def _parse_var(item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not _PLACEHOLDER.fullmatch("${%s}" % name):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {item!r}")
    return name, value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="file to write the Envoy bootstrap to")
    p.add_argument("--var", action="append", default=[], type=_parse_var, metavar="NAME=VALUE")
    p.add_argument("--filter-config", default=str(FILTER_TEMPLATE), metavar="FILE",
                   help="filter configuration template (default: %(default)s)")
    p.add_argument("--template", default=str(ENVOY_TEMPLATE), metavar="FILE",
                   help="Envoy bootstrap template (default: %(default)s)")
    args = p.parse_args(argv)
    try:
        render(args.out, dict(args.var), filter_config_path=args.filter_config,
               template=args.template)
    except (RenderError, OSError) as e:
        print(f"render.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
