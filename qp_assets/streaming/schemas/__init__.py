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
