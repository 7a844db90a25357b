"""`qp audit`: the invariant's verdict per request (no services)."""

from __future__ import annotations

import argparse
from datetime import date

import pytest

from qp_assets.audit import (
    AuditReport,
    DlqRef,
    RequestTrace,
    ResultRef,
    RowRef,
    day_window_ms,
    evaluate,
    format_report,
    register,
)


def _trace(rid: str | None, **kw) -> RequestTrace:
    return RequestTrace(rid, 0, kw.pop("offset", 0), 0, 0, **kw)


def _result(run_id: str, t: int = 0) -> ResultRef:
    return ResultRef("vqe_result_v3.x", 0, t, run_id, t)


def test_each_kind_of_violation_is_named() -> None:
    traces = [
        _trace(
            "ok-row", results=[_result("r1")], landed={"r1": ["k1"]}, rows=[RowRef("r1", "2026-01-14", 0)]
        ),
        _trace("ok-dlq", dlq=[DlqRef(0, 3, "unknown element Xx", -1, -1)]),
        _trace("dup", rows=[RowRef("a", "2026-01-14", 0), RowRef("b", "2026-01-15", 0)]),
        _trace("both", rows=[RowRef("a", "2026-01-14", 0)], dlq=[DlqRef(0, 4, "bad", -1, -1)]),
        _trace("two-dlq", dlq=[DlqRef(0, 5, "bad", -1, -1), DlqRef(0, 6, "bad", -1, -1)]),
        _trace("missing"),
        _trace("unlanded", results=[_result("r2")]),
        _trace("unbuilt", results=[_result("r3")], landed={"r3": ["k3"]}),
        _trace(
            "stale",
            results=[_result("old", 1), _result("new", 2)],
            landed={"old": ["k"], "new": ["k2"]},
            rows=[RowRef("old", "2026-01-14", 1)],
        ),
        _trace(None, offset=9, decode_error="bad magic", key="k-garbage"),
        _trace(None, offset=10, decode_error="bad magic", dlq=[DlqRef(0, 7, "bad magic", 0, 10)]),
        _trace(
            None,
            offset=11,
            decode_error="x",
            key="k2",
            dlq=[DlqRef(0, 8, "x", 0, 11), DlqRef(0, 9, "x", 0, 11)],
        ),
    ]
    violations = evaluate(traces)
    kinds = {(v["request_id"], v["kind"]) for v in violations}
    assert kinds == {
        ("dup", "duplicated_rows"),
        ("both", "row_and_dlq"),
        ("two-dlq", "duplicated_dlq"),
        ("missing", "missing"),
        ("unlanded", "published_not_landed"),
        ("unbuilt", "landed_not_in_iceberg"),
        ("stale", "not_latest"),
        ("<undecodable 0@9 key='k-garbage'>", "undecodable_not_in_dlq"),
        ("<undecodable 0@11 key='k2'>", "duplicated_dlq"),
    }
    assert [t.status for t in traces[:2]] == ["row", "dlq"] and traces[-2].status == "dlq"
    assert "2 rows in vqe_results: a (2026-01-14), b (2026-01-15)" in traces[2].violations[0]
    report = AuditReport("2026-01-14", traces, {}, violations, {}, 0.1)
    report.counts = {
        "requests": 11,
        "undecodable": 2,
        "resubmitted_ids": 0,
        "results_published": 4,
        "result_messages": 5,
        "results_landed": 3,
        "iceberg_rows": 5,
        "dlq_entries": 5,
        "ok_row": 1,
        "ok_dlq": 2,
        "violating_requests": 9,
    }
    text = format_report(report, show_all=True)
    assert text.startswith("audit 2026-01-14 (UTC): VIOLATIONS")
    assert sum(line.startswith("VIOLATION ") for line in text.splitlines()) == 9
    assert "VIOLATION missing                missing  (vqe.requests[0]@0)" in text
    assert report.to_json()["green"] is False


def test_day_window_is_utc() -> None:
    assert day_window_ms(date(2026, 1, 14)) == (1768348800000, 1768435200000)


def test_cli_rejects_a_bad_day(capsys) -> None:
    parser = argparse.ArgumentParser(prog="qp")
    register(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["audit", "14/01/2026"])
    assert exc.value.code == 2
    assert "DAY: expected YYYY-MM-DD, got '14/01/2026'" in capsys.readouterr().err
    args = parser.parse_args(["audit", "2026-01-14", "--json", "--request-id-prefix", "airflow-"])
    assert args.day == date(2026, 1, 14) and args.json and args.request_id_prefix == "airflow-"


def test_a_scan_request_expects_one_row_per_point_and_its_dlq_entry_settles_every_point() -> None:
    from qp_assets.audit import attach_dlq, request_traces

    scan = {"request_id": "s1", "molecule": {"name": "H2"}, "scan": {"points": 3}}
    traces = request_traces(scan, 0, 5, 0, 0) + request_traces(
        {"request_id": "one", "molecule": {}}, 0, 6, 0, 0
    )
    assert [t.request_id for t in traces] == ["s1#0", "s1#1", "s1#2", "one"]
    assert [t.scan_of for t in traces] == ["s1", "s1", "s1", None]
    traces[0].rows = [RowRef("r0", "2026-01-14", 0)]
    traces[1].rows = [RowRef("r1", "2026-01-14", 0), RowRef("r1b", "2026-01-14", 0)]
    kinds = {(v["request_id"], v["kind"]) for v in evaluate(traces)}
    assert kinds == {("s1#1", "duplicated_rows"), ("s1#2", "missing"), ("one", "missing")}
    refused = request_traces({**scan, "request_id": "s2"}, 0, 7, 0, 0)
    attach_dlq(refused, [("s2", DlqRef(0, 1, "scan: field 'points' must be ...", -1, -1))])
    assert evaluate(refused) == [] and [t.status for t in refused] == ["dlq"] * 3


def test_undecodable_request_gets_only_entries_from_its_own_topic():
    """A private topic sharing the dead-letter topic (a test's, a fault case's) has its own partition 0 @ 10:
    its entry must not be counted as a second dead letter of vqe.requests[0]@10."""
    from qp_assets.audit import attach_dlq, evaluate

    trace = _trace(None, offset=10, decode_error="bad magic")
    own = DlqRef(0, 7, "bad magic", 0, 10, "vqe.requests")
    other = DlqRef(0, 8, "bad magic", 0, 10, "qp_test_private_requests")
    legacy = DlqRef(0, 9, "bad magic", 0, 11)  # an entry without the source-topic header still matches
    trace2 = _trace(None, offset=11, decode_error="bad magic")
    attach_dlq([trace, trace2], [(None, own), (None, other), (None, legacy)], "vqe.requests")
    assert trace.dlq == [own] and trace2.dlq == [legacy]
    assert evaluate([trace, trace2]) == []
