"""Writes strict JSON Schemas for prometheus-operator's PodMonitor and PrometheusRule.

We found no package on PyPI, npm or Debian that ships prometheus-operator's CRD YAML itself;
cloudcoil-models-prometheus-operator (PyPI, pinned in requirements.txt) ships pydantic models
generated from those CRDs, versioned after them (0.80.1.0: prometheus-operator v0.80.1, the newest
it publishes for Python 3.11). This exports each model's JSON Schema and
adds `additionalProperties: false` to every object that lists properties and says nothing of extra
ones, as the strict Argo schemas do (tests/k8s/argo-schemas/README.md): the API server would prune
an unknown field (a typo) silently, the schema rejects it.

The CRDs' patterns are Go regular expressions; the one construct JSON Schema's (ECMAScript)
regular expressions lack, a leading (?i), is spelt out as case-insensitive letters, since
check-jsonschema checks every pattern against the metaschema whatever --regex-variant says.

Usage: python prometheus_operator_schemas.py OUTDIR
Writes OUTDIR/<kind>-monitoring-v1.json for check-jsonschema.
"""

import json
import pathlib
import sys

from cloudcoil.models.prometheus_operator import v1

KINDS = ("PodMonitor", "PrometheusRule")


def case_insensitive(pattern):
    """`(?i)ab` as `[aA][bB]`: letters outside character classes and escapes."""
    out, in_class, escaped = [], False, False
    for char in pattern.replace("(?i)", ""):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        elif char.isalpha() and char.isascii() and not in_class:
            char = f"[{char.lower()}{char.upper()}]"
        out.append(char)
    return "".join(out)


def strict(node):
    """Closes every object schema that lists properties, recursively."""
    if isinstance(node, dict):
        if node.get("properties") and "additionalProperties" not in node:
            node["additionalProperties"] = False
        pattern = node.get("pattern")
        if isinstance(pattern, str) and "(?i)" in pattern:
            node["pattern"] = case_insensitive(pattern)
        for value in node.values():
            strict(value)
    elif isinstance(node, list):
        for value in node:
            strict(value)
    return node


def main(outdir):
    out = pathlib.Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        schema = getattr(v1, kind).model_json_schema(by_alias=True, mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        path = out / f"{kind.lower()}-monitoring-v1.json"
        path.write_text(json.dumps(strict(schema), indent=1, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1])
