"""Invariants of the feature tables as plain functions over pyarrow tables (unit-testable without Dagster).

Energies in hartree. Each function returns the offending keys (empty list = invariant holds).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

DEFAULT_VARIATIONAL_TOL_HA = 1e-6


def null_key_rows(rows: Any, keys: Sequence[str]) -> int:
    """Number of rows of ``rows`` (pyarrow Table) with a null in any of ``keys``."""
    missing = [k for k in keys if k not in rows.column_names]
    if missing:
        raise ValueError(f"keys: column(s) {missing} not in table columns {rows.column_names}")
    return sum(rows.column(k).null_count for k in keys)


def duplicate_keys(rows: Any, keys: Sequence[str]) -> list[tuple]:
    """Key tuples that occur more than once."""
    counts = Counter(zip(*(rows.column(k).to_pylist() for k in keys), strict=True))
    return [k for k, n in counts.items() if n > 1]


def variational_bound_violations(
    vqe_results: Any, tol_ha: float = DEFAULT_VARIATIONAL_TOL_HA
) -> list[dict[str, Any]]:
    """Runs whose VQE total energy lies below the exact reference by more than ``tol_ha`` hartree.

    For shot-based runs the tolerance is widened by 3 standard errors is not known here, so shot-based
    rows (``shots`` not null) use ``max(tol_ha, 5e-3)``. Rows without an exact reference are skipped.
    """
    out = []
    for rec in vqe_results.select(["run_id", "total_energy", "exact_energy", "shots"]).to_pylist():
        exact, total = rec["exact_energy"], rec["total_energy"]
        if exact is None or total is None or (isinstance(exact, float) and math.isnan(exact)):
            continue
        tol = max(tol_ha, 5e-3) if rec["shots"] else tol_ha
        if total < exact - tol:
            out.append({"run_id": rec["run_id"], "total_energy": total, "exact_energy": exact})
    return out


def exact_error_inconsistencies(vqe_results: Any, tol_mha: float = 1e-6) -> list[dict[str, Any]]:
    """Runs whose recorded error vs the exact reference (``error_vs_exact_mha``, milli-hartree) is not
    ``(total_energy - exact_energy) * 1000`` within ``tol_mha``, or is set without an exact reference.

    The runner computes it from the same two energies, so any difference means a wrong record (a wrong
    reference attached to the run, or energies in another unit); rows without both are skipped."""
    out = []
    cols = ["run_id", "total_energy", "exact_energy", "error_vs_exact_mha"]
    for rec in vqe_results.select(cols).to_pylist():
        exact, total, error = rec["exact_energy"], rec["total_energy"], rec["error_vs_exact_mha"]
        if error is None or total is None:
            continue
        if exact is None or (isinstance(exact, float) and math.isnan(exact)):
            out.append({**rec, "problem": "an error vs exact without an exact reference"})
        elif not abs(error - (total - exact) * 1000.0) <= tol_mha:
            out.append({**rec, "problem": f"expected {(total - exact) * 1000.0!r} mHa"})
    return out


def iteration_inconsistencies(
    vqe_results: Any, vqe_iterations: Any, tol_ha: float = 1e-9
) -> list[dict[str, Any]]:
    """Runs whose iteration rows disagree with their result row.

    A run is consistent when it has exactly ``num_iterations`` rows in vqe_iterations with distinct
    iteration numbers, and ``minimum_iteration_energy`` equals the minimum energy of those rows.
    """
    per_run: dict[str, list[tuple[int, float]]] = {}
    for rec in vqe_iterations.select(["run_id", "iteration", "energy"]).to_pylist():
        per_run.setdefault(rec["run_id"], []).append((rec["iteration"], rec["energy"]))
    out = []
    for rec in vqe_results.select(["run_id", "num_iterations", "minimum_iteration_energy"]).to_pylist():
        its = per_run.pop(rec["run_id"], [])
        expected = rec["num_iterations"] or 0
        problem = None
        if len(its) != expected:
            problem = f"{len(its)} iteration rows, result says {expected}"
        elif len({i for i, _ in its}) != len(its):
            problem = "duplicate iteration numbers"
        elif its and rec["minimum_iteration_energy"] is not None:
            lowest = min(e for _, e in its)
            if abs(lowest - rec["minimum_iteration_energy"]) > tol_ha:
                problem = f"min iteration energy {lowest} != result's {rec['minimum_iteration_energy']}"
        if problem:
            out.append({"run_id": rec["run_id"], "problem": problem})
    for run_id, its in per_run.items():
        out.append({"run_id": run_id, "problem": f"{len(its)} iteration rows without a vqe_results row"})
    return out


def unreadable_landed_files(processing_metadata: Any) -> list[dict[str, Any]]:
    """Days whose latest build met landed files it could not decode (their rows are not in the tables).

    ``processing_metadata`` holds one row per build and day; only the latest build of each day counts, so
    a day rebuilt after the bad files were dealt with (moved out of ``raw/topics``) passes again.
    """
    latest: dict[Any, dict[str, Any]] = {}
    for rec in processing_metadata.select(["event_date", "processed_at", "bad_files"]).to_pylist():
        seen = latest.get(rec["event_date"])
        if seen is None or rec["processed_at"] > seen["processed_at"]:
            latest[rec["event_date"]] = rec
    return [
        {"day": str(day), "bad_files": rec["bad_files"]}
        for day, rec in sorted(latest.items())
        if rec["bad_files"]
    ]
