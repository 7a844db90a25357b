"""The two ML tables end to end: golden landed Avro -> the ten feature tables -> ``build_ml_days`` (Spark
reading the Iceberg tables) -> exact rows.

Same pattern as ``test_features_build.py``: the golden input (plus one 9-iteration run that reaches
chemical accuracy) under a unique S3 prefix, a private SQLite catalog and warehouse. The feature tables of
both golden days are built once for the module; tests run in file order.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
import uuid
from datetime import UTC, datetime

import pytest

from qp_assets.features import golden
from qp_assets.features.ml_tables import CHEMICAL_ACCURACY_MHA, ML_TABLES, ROLLING_WINDOW
from qp_assets.streaming.schemas import RESULT_SCHEMA, schema_dict

pytestmark = [pytest.mark.spark, pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(300)]

NS = "quantum_features"
DAY1, DAY2 = golden.GOLDEN_DAY1, golden.GOLDEN_DAY2
LONG_RUN = golden.make_result(
    8, datetime(2026, 1, 15, 9, tzinfo=UTC), num_iterations=9
)  # converges at iteration 7
#: The long run's result reused by a later request (result reuse): same numbers, so never ML data twice.
REUSED = {**LONG_RUN, "run_id": "run-000009", "request_id": "req-000009", "reused_from": LONG_RUN["request_id"],
          "event_time": datetime(2026, 1, 15, 10, tzinfo=UTC)}  # fmt: skip


@pytest.fixture(scope="module")
def env(stack, tmp_path_factory):
    from qp_assets.features.build import build_days
    from qp_assets.features.spark import get_spark_session
    from qp_assets.s3 import s3_client

    tmp = tmp_path_factory.mktemp("ml")
    prefix = f"tests/ml-{uuid.uuid4().hex[:10]}/"
    settings = dataclasses.replace(
        stack,
        iceberg_catalog_name="qp_test_ml",
        iceberg_catalog_uri=f"sqlite:///{tmp / 'catalog.db'}",
        iceberg_warehouse=f"s3://{stack.bucket}/{prefix}warehouse",
    )
    client = s3_client(settings)
    sink = golden.LandingSink(s3_client=client, bucket=settings.bucket, prefix=prefix)
    files = [
        *golden.golden_files(),
        golden.GoldenFile(golden.DEFAULT_TOPIC, 0, 10, LONG_RUN["event_time"], (LONG_RUN,)),
    ]
    for f in files:
        f.write(sink)
    schema_v4 = schema_dict(RESULT_SCHEMA, 4)  # reused_from is a v4 field
    golden.write_landed_file(sink, [REUSED], offset=11, schema=schema_v4)
    spark = get_spark_session(settings)
    upstream = sorted({t for spec in ML_TABLES.values() for t in spec.depends_on})  # 4 of the 10 suffice
    build_days([DAY1, DAY2], spark, settings, upstream, raw_root=sink.raw_root, namespace=NS)
    yield {"settings": settings, "spark": spark, "files": files}
    spark.stop()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=settings.bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=settings.bucket, Delete={"Objects": keys})


def ident(env, table):
    return f"{env['settings'].iceberg_catalog_name}.{NS}.{table}"


def rows(env, table, order):
    return env["spark"].sql(f"SELECT * FROM {ident(env, table)} ORDER BY {order}").collect()


def records(env):
    return sorted(
        (r for f in env["files"] for r in f.records), key=lambda r: r["run_id"]
    )  # every golden run is built (run 7 on day 1 although it landed on day 2)


def expected_iteration_rows(rec):
    energies = [it["energy"] for it in rec["iterations"]]
    out = []
    for i, it in enumerate(rec["iterations"]):
        window = energies[max(0, i - ROLLING_WINDOW + 1) : i + 1]
        error = (it["energy"] - golden.H2_EXACT) * 1000.0
        out.append(
            {
                "run_id": rec["run_id"],
                "event_date": rec["event_time"].astimezone(UTC).date(),
                "iteration": it["iteration"],
                "experiment_id": rec["experiment_id"],
                "molecule_name": "H2",
                "energy": it["energy"],
                "energy_delta": it["energy"] - energies[i - 1] if i else None,
                "gradient_norm": it["gradient_norm"],
                "parameter_delta_norm": it["parameter_delta_norm"],
                f"energy_rolling_mean_{ROLLING_WINDOW}": statistics.fmean(window),
                f"energy_rolling_std_{ROLLING_WINDOW}": statistics.pstdev(window),
                "error_vs_exact_mha": error,
                "within_chemical_accuracy": abs(error) <= CHEMICAL_ACCURACY_MHA,
            }
        )
    return out


def assert_row(actual, expected, context):
    assert list(actual.asDict()) == list(expected), context
    for name, want in expected.items():
        got = actual[name]
        if isinstance(want, float) and want is not None:
            assert math.isclose(got, want, rel_tol=0, abs_tol=1e-12), (context, name, got, want)
        else:
            assert got == want, (context, name, got, want)


def test_ml_tables_exact_rows_for_the_golden_days(env):
    from qp_assets.features.ml_tables import build_ml_days

    started = time.monotonic()
    result = build_ml_days([DAY1, DAY2], env["spark"], env["settings"], namespace=NS)
    print(f"build_ml_days, 2 golden days: {time.monotonic() - started:.1f} s")
    recs = records(env)
    assert [r["run_id"] for r in recs] == [f"run-{i:06d}" for i in (0, 1, 2, 3, 4, 5, 7, 8)]
    per_day = {
        d.isoformat(): [r for r in recs if r["event_time"].astimezone(UTC).date() == d] for d in (DAY1, DAY2)
    }
    assert result.row_counts == {
        "ml_iteration_features": {d: sum(len(r["iterations"]) for r in rs) for d, rs in per_day.items()},
        "ml_run_summary": {d: len(rs) for d, rs in per_day.items()},
    }
    assert result.row_counts["ml_iteration_features"] == {"2026-01-14": 19, "2026-01-15": 20}
    assert result.stale_runs_deleted == [] and set(result.snapshot_ids) == set(ML_TABLES)
    for name, spec in ML_TABLES.items():  # exactly the declared columns and types
        written = env["spark"].table(ident(env, name)).schema
        assert [(f.name, f.dataType) for f in written] == [(f.name, f.dataType) for f in spec.schema]

    its = rows(env, "ml_iteration_features", "run_id, iteration")
    expected = [row for rec in recs for row in expected_iteration_rows(rec)]
    assert len(its) == len(expected) == 39
    for actual, want in zip(its, expected, strict=True):
        assert_row(actual, want, (want["run_id"], want["iteration"]))
    first = its[0]
    assert first.energy_delta is None and first[f"energy_rolling_std_{ROLLING_WINDOW}"] == 0.0

    summary = {r.run_id: r for r in rows(env, "ml_run_summary", "run_id")}
    assert sorted(summary) == [r["run_id"] for r in recs]
    # the reused result is a row of vqe_results, not of the ML tables (checked above: not in recs)
    reused = rows(env, "vqe_results", "run_id")
    assert [(r.run_id, r.reused_from) for r in reused if r.reused_from] == [("run-000009", "req-000008")]
    for rec in recs:
        i = int(rec["run_id"][-1])
        errors = [(it["energy"] - golden.H2_EXACT) * 1000 for it in rec["iterations"]]
        converged = next((k + 1 for k, e in enumerate(errors) if abs(e) <= CHEMICAL_ACCURACY_MHA), None)
        n_it = len(rec["iterations"])
        assert_row(
            summary[rec["run_id"]],
            {
                "run_id": rec["run_id"],
                "event_date": rec["event_time"].astimezone(UTC).date(),
                "event_time": rec["event_time"].astimezone(UTC).replace(tzinfo=None),
                "request_id": f"req-{i:06d}",
                "experiment_id": "exp-h2-sto3g",
                "molecule_name": "H2",
                "basis": "sto3g",
                "mapper": "jordan_wigner",
                "ansatz_name": "uccsd",
                "ansatz_reps": 1,
                "initial_state": "hartree_fock",
                "optimizer_name": "L-BFGS-B",
                "max_iterations": n_it,
                "backend_method": "statevector",
                "shots": None,
                "seed": 1000 + i,
                "device_used": "CPU",
                "num_qubits": 4,
                "num_parameters": len(rec["initial_parameters"]),
                "num_iterations": n_it,
                "convergence_iteration": converged,
                "error_vs_exact_mha": rec["error_vs_exact_mha"],
                "vqe_s": 1.5,
                "optimizer_success": True,
            },
            rec["run_id"],
        )
    # only the 9-iteration run gets within 1.6 mHa (28 mHa * exp(-3) = 1.39 at iteration 7)
    assert {r: s.convergence_iteration for r, s in summary.items() if s.convergence_iteration} == {
        "run-000008": 7
    }
    assert summary["run-000008"].error_vs_exact_mha == pytest.approx(28 * math.exp(-4), abs=1e-9)


def test_rebuild_is_idempotent_and_runs_gone_from_vqe_results_leave_the_ml_tables(env):
    from qp_assets.features.ml_tables import build_ml_days

    spark = env["spark"]
    before = {t: rows(env, t, "run_id") for t in ML_TABLES}
    again = build_ml_days([DAY1], spark, env["settings"], namespace=NS)
    assert again.row_counts == {
        "ml_iteration_features": {"2026-01-14": 19},
        "ml_run_summary": {"2026-01-14": 5},
    }
    assert {t: rows(env, t, "run_id") for t in ML_TABLES} == before  # same rows, nothing duplicated

    # the feature build superseded run 1 (a newer result of its request elsewhere): its vqe_results row is gone
    spark.sql(f"DELETE FROM {ident(env, 'vqe_results')} WHERE run_id = 'run-000001'")
    day2 = build_ml_days([DAY2], spark, env["settings"], namespace=NS, tables=["ml_run_summary"])
    assert day2.stale_runs_deleted == ["run-000001"]
    assert rows(env, "ml_run_summary", "run_id") == [
        r for r in before["ml_run_summary"] if r.run_id != "run-000001"
    ]
    # the table not selected is left alone until its own build
    assert len([r for r in before["ml_iteration_features"] if r.run_id == "run-000001"]) == 4
    assert rows(env, "ml_iteration_features", "run_id") == before["ml_iteration_features"]
    with pytest.raises(ValueError, match=r"unknown ML table\(s\) \['vqe_results'\]"):
        build_ml_days([DAY1], spark, env["settings"], namespace=NS, tables=["vqe_results"])
