"""Fault table: time to recover, requests lost and duplicated, per fault of the fault-injection suite.

Runs ``tests/faults/`` (pytest marker ``faults``) against the stack of the current environment
(``QP_HOME`` / ``QP_PORT_OFFSET``; the suite's cases use their own request-id prefixes and leave the
stack running) and prints one row per fault from the suite's final audit (``test_zz_audit.py``: each case's
requests audited with ``qp_assets.audit.audit_day`` after one feature build per day):

* recovery s: as defined by the case (e.g. registry back -> results landed; Connect killed -> all landed);
* lost: requests with no row and no DLQ entry (``missing``, ``published_not_landed``,
  ``landed_not_in_iceberg``, ``undecodable_not_in_dlq``);
* duplicated: requests with more than one row / DLQ entry, both, or a result landed in two objects;

then every setup / call / teardown of 1 s or more (pytest ``--durations``), the suite's cost per case.

    .venv/bin/python benchmarks/faults.py [-k connkill]    # extra arguments go to pytest

Destructive for the stack it runs on (kills and stops its processes): use a test stack
(``QP_HOME=.qp-test QP_PORT_OFFSET=...``), never a stack holding data you need.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "faults.jsonl"
        env = {**os.environ, "QP_FAULTS_TABLE": str(table)}
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", "faults", "--timeout=900",
             "--durations=0", "--durations-min=1", "tests/faults", *argv],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        elapsed = time.monotonic() - started
        rows = [json.loads(line) for line in table.read_text().splitlines()] if table.exists() else []
    if not rows:
        print(proc.stdout[-4000:] + proc.stderr[-4000:])
        print(f"no fault table: pytest exited {proc.returncode}", file=sys.stderr)
        return 1
    print("| fault | recovery s | lost | duplicated | requests |\n|---|---:|---:|---:|---:|")
    for r in rows:
        rec = "-" if r["recovery_s"] is None else f"{r['recovery_s']:.1f}"
        print(f"| {r['fault']} | {rec} | {r['lost']} | {r['duplicated']} | {r['requests']} |")
    print("\ntest durations (s, pytest --durations):")
    print(
        "\n".join(
            line for line in proc.stdout.splitlines() if re.match(r"^\d+\.\d+s (setup|call|teardown) ", line)
        )
    )
    print(f"\nsuite: {elapsed:.0f} s, pytest exit {proc.returncode}")
    summary = [line for line in proc.stdout.splitlines() if " passed" in line or " failed" in line]
    print(summary[-1] if summary else proc.stdout[-2000:])
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
