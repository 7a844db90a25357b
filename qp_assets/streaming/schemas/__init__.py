"""Versioned Avro schemas (``<name>_v<N>.avsc``); the highest N is the current one."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent
_VERSIONED = re.compile(r"^(?P<name>[a-z_]+)_v(?P<version>\d+)\.avsc$")


def versions(name: str) -> list[int]:
    """Available versions of schema ``name`` (e.g. ``vqe_result``), ascending."""
    found = []
    for path in SCHEMA_DIR.glob(f"{name}_v*.avsc"):
        m = _VERSIONED.match(path.name)
        if m and m["name"] == name:
            found.append(int(m["version"]))
    return sorted(found)


def latest_version(name: str) -> int:
    found = versions(name)
    if not found:
        raise FileNotFoundError(f"no schema files {name}_v*.avsc in {SCHEMA_DIR}")
    return found[-1]


@cache
def schema_text(name: str, version: int | None = None) -> str:
    """The ``.avsc`` text of ``name`` at ``version`` (default: latest)."""
    version = latest_version(name) if version is None else version
    path = SCHEMA_DIR / f"{name}_v{version}.avsc"
    if not path.exists():
        raise FileNotFoundError(f"schema {name} v{version} not found ({path}); have {versions(name)}")
    return path.read_text()


def schema_dict(name: str, version: int | None = None) -> dict:
    return json.loads(schema_text(name, version))


RESULT_SCHEMA = "vqe_result"
REQUEST_SCHEMA = "vqe_request"

# Per schema: majors from this one on are checked against the previous major before use (default: every
# major from 2). vqe_result v1-v3 predate the check (v3 is not readable by a v2 reader: it promotes float ->
# double); the feature build reads with v3.
FIRST_CHECKED_MAJOR = {"vqe_result": 4}


def _field_path(schema: dict, pointer: str) -> str:
    """A JSON pointer into ``schema`` (``/fields/11/type/fields/2``) as a dotted field path (``backend.device_requested``)."""
    node: object = schema
    names: list[str] = []
    previous = ""
    for part in (p for p in pointer.split("/") if p):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            if previous == "fields" and isinstance(node, dict):
                names.append(str(node.get("name")))
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            break
        previous = part
    return ".".join(names) or "(record)"


@cache
def major_incompatibilities(name: str, version: int) -> tuple[str, ...]:
    """Why ``name`` v``version`` cannot replace v``version - 1`` (empty when it can, or nothing to check).

    A new major gets a new, empty registry subject (the topic carries the major), so the registry's own
    check never compares it with its predecessor. Checked here locally with Avro's schema resolution rules,
    both ways (FULL): the previous major's readers (e.g. the feature build's fixed v3 reader) must read
    the new major's records, and the new reader must read the previous major's records. Each problem
    names the direction and the fields (dotted paths) with Avro's reason.
    """
    if version < FIRST_CHECKED_MAJOR.get(name, 2) or version - 1 not in versions(name):
        return ()
    import avro.compatibility
    import avro.schema

    new, old = schema_dict(name, version), schema_dict(name, version - 1)
    checker = avro.compatibility.ReaderWriterCompatibilityChecker()
    problems = []
    for label, reader, writer in ((f"v{version - 1} reader, v{version} writer", old, new),
                                  (f"v{version} reader, v{version - 1} writer", new, old)):  # fmt: skip
        res = checker.get_compatibility(
            avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer))
        )
        if res.compatibility is not avro.compatibility.SchemaCompatibilityType.compatible:
            fields = sorted({_field_path(reader, loc) for loc in res.locations if loc != "/"})
            reasons = sorted(str(m) for m in res.messages)
            problems.append(f"{label}: fields {', '.join(fields) or '(record)'} ({'; '.join(reasons)})")
    return tuple(problems)
