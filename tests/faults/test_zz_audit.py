"""The end of every fault case: one feature build per day the cases touched, then `qp audit` per case.

Cases register what their requests must end as (:func:`tests.faults.tools.expect`); building each day once
here keeps the suite to one Spark build per day instead of one per case. Every case's audit (its own
request-id prefix) must be green with the expected counts; the fault table (recovery s, lost, duplicated)
is printed, and written as JSON lines to ``QP_FAULTS_TABLE`` when set (``benchmarks/faults.py``).
"""

from __future__ import annotations

import json
import os

import pytest
from dagster import DagsterInstance

from tests.faults import flow
from tests.faults.tools import LEDGER, lost_and_duplicated, run_audit

pytestmark = [pytest.mark.faults, pytest.mark.services, pytest.mark.spark, pytest.mark.slow,
              pytest.mark.timeout(900)]  # fmt: skip


def test_every_case_ends_green() -> None:
    if not LEDGER:
        pytest.skip("no fault case ran in this session")
    from qp_assets.definitions import defs

    needs_build = sorted({e.day for e in LEDGER if e.counts.get("iceberg_rows", 0) and not e.built})
    with DagsterInstance.ephemeral() as instance:
        for day in needs_build:
            flow.build_features(instance, defs, day)
    rows, failures = [], []
    for e in LEDGER:
        report = run_audit(e.day, e.settings, e.prefix, e.case)
        lost, duplicated = lost_and_duplicated(report)
        rows.append({"fault": e.case, "recovery_s": e.recovery_s, "lost": lost, "duplicated": duplicated,
                     "requests": report.counts["requests"], "notes": e.notes})  # fmt: skip
        wrong = {k: (report.counts[k], v) for k, v in e.counts.items() if report.counts[k] != v}
        off_day = [
            (t.label, r.event_date) for t in report.requests for r in t.rows if r.event_date != str(e.day)
        ]
        if not report.green or wrong or off_day:
            failures.append(
                f"{e.case} ({e.prefix}): violations {report.violations}, counts (got, want) {wrong}"
            )
    print("\nfault                                   recovery s  lost  duplicated  requests")
    for r in rows:
        rec = "-" if r["recovery_s"] is None else f"{r['recovery_s']:.1f}"
        print(f"{r['fault']:<40}{rec:>10}{r['lost']:>6}{r['duplicated']:>12}{r['requests']:>10}")
    if os.environ.get("QP_FAULTS_TABLE"):
        with open(os.environ["QP_FAULTS_TABLE"], "a") as handle:
            for r in rows:
                handle.write(json.dumps(r) + "\n")
    assert not failures, "\n".join(failures)
