"""Feature assets against the real stack + Spark: one partition with its checks, and a two-day backfill
in one run. Input is the golden landed data of the feature module, under a unique prefix / namespace."""

from collections import defaultdict
from datetime import timedelta

import pytest
from dagster import DagsterEventType, DagsterInstance
from orchestration_helpers import feature_definitions, isolated

from qp_assets.features.catalog import read_rows
from qp_assets.features.golden import GOLDEN_DAY1, GOLDEN_DAY2, expected_rows, golden_files, records_of_day
from qp_assets.features.transforms import DATA_TABLES, TABLES

pytestmark = [pytest.mark.services, pytest.mark.spark, pytest.mark.slow]


#: The golden file the first test lands while its build runs (day 1, topic B: run 3).
HELD_OUT = 1


@pytest.fixture(scope="module")
def landed(stack):
    """The golden files under an isolated prefix, except ``HELD_OUT``: ``land_all`` writes it."""
    iso = isolated(stack)
    sink = iso.sink()
    for i, f in enumerate(golden_files()):
        if i != HELD_OUT:
            f.write(sink)
    yield iso
    iso.cleanup()


def land_all(iso) -> None:
    """Land the held-out golden file (idempotent: same key, same bytes)."""
    golden_files()[HELD_OUT].write(iso.sink())


def _materializations(result):
    out = defaultdict(list)
    for ev in result.get_asset_materialization_events():
        mat = ev.event_specific_data.materialization
        out[mat.asset_key.path[-1]].append(mat)
    return out


def _checks(result):
    return {
        (
            e.event_specific_data.asset_key.path[-1],
            e.event_specific_data.check_name,
        ): e.event_specific_data.passed
        for e in result.all_events
        if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
    }


def test_feature_partition_materializes_all_ten_tables_and_checks_pass(landed, monkeypatch):
    """One day, all ten tables and their checks; a file that lands while the build runs is built by the same
    run (it catches up: a second build in the same process), and the tables record the landing signature
    that covers it, so the landing sensor requests no further run."""
    from qp_assets.features import build
    from qp_assets.sensors.landing import landed_per_day

    real_build_days, calls = build.build_days, []

    def build_days_landing_a_file_meanwhile(*args, **kwargs):
        calls.append(args[0])
        results = real_build_days(*args, **kwargs)
        if len(calls) == 1:
            land_all(landed)  # lands after the first build listed the day's files
        return results

    monkeypatch.setattr(build, "build_days", build_days_landing_a_file_meanwhile)
    defs = feature_definitions(landed.resources())
    job = defs.resolve_job_def("feature_processing_job")
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(partition_key=GOLDEN_DAY1.isoformat(), instance=instance)
    assert result.success
    assert calls == [[GOLDEN_DAY1], [GOLDEN_DAY1]]  # caught up: built twice, in one run
    now = landed_per_day(landed.s3(), landed.settings.bucket, landed.raw_prefix, [GOLDEN_DAY1])[GOLDEN_DAY1]
    assert now.files == 2  # day 1's own folder: topic A hour 10, topic B hour 23
    mats = _materializations(result)
    assert sorted(mats) == sorted(TABLES)
    assert {m.metadata["landing_signature"].value for ms in mats.values() for m in ms} == {now.signature()}
    expected = expected_rows(records_of_day(golden_files(), GOLDEN_DAY1))
    for table in DATA_TABLES:
        meta = mats[table][0].metadata
        assert meta["dagster/row_count"].value == expected[table], (table, meta)
        assert meta["snapshot_ids"].value, table
    assert mats["processing_metadata"][0].metadata["dagster/row_count"].value == 1
    checks = _checks(result)
    assert len(checks) == 14 and all(checks.values()), checks
    # read back through PyIceberg: 5 runs on day 1 (runs 0, 1, 2, 3 and the late-landed 7)
    rows = read_rows("vqe_results", day=GOLDEN_DAY1, settings=landed.settings, namespace=landed.namespace)
    assert sorted(rows.column("run_id").to_pylist()) == [f"run-{i:06d}" for i in (0, 1, 2, 3, 7)]
    meta = read_rows("processing_metadata", settings=landed.settings, namespace=landed.namespace).to_pylist()
    # one processing_metadata row per build: the first without the file that landed meanwhile, then with it
    builds = sorted(meta, key=lambda m: m["processed_at"])
    assert [(m["dagster_run_id"], m["runs"]) for m in builds] == [(result.run_id, 4), (result.run_id, 5)]


def test_three_day_backfill_with_an_empty_day_is_one_run(landed):
    """A range whose first day has no landed data: one run, every day written, every check passes."""
    land_all(landed)
    empty_day = GOLDEN_DAY1 - timedelta(days=1)
    defs = feature_definitions(landed.resources())
    job = defs.resolve_job_def("feature_processing_job")
    tags = {
        "dagster/asset_partition_range_start": empty_day.isoformat(),
        "dagster/asset_partition_range_end": GOLDEN_DAY2.isoformat(),
    }
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(tags=tags, instance=instance)
        assert len(instance.get_runs()) == 1
    assert result.success
    mats = _materializations(result)
    per_day = mats["vqe_results"][0].metadata["rows_per_day"].value
    assert per_day == {empty_day.isoformat(): 0, GOLDEN_DAY1.isoformat(): 5, GOLDEN_DAY2.isoformat(): 2}
    checks = _checks(result)
    assert len(checks) == 14 and all(checks.values()), checks
    rows = read_rows("vqe_results", settings=landed.settings, namespace=landed.namespace)
    assert rows.num_rows == 7  # day 1 overwritten, not duplicated
    meta = read_rows("processing_metadata", settings=landed.settings, namespace=landed.namespace).to_pylist()
    # an empty day writes nothing, so it has no processing_metadata row either
    assert sorted(m["event_date"].isoformat() for m in meta if m["dagster_run_id"] == result.run_id) == [
        GOLDEN_DAY1.isoformat(),
        GOLDEN_DAY2.isoformat(),
    ]


def test_an_unreadable_landed_file_fails_the_run_visibly(landed):
    """A corrupt file among good ones: the good run lands, the blocking check names the file, the run fails."""
    land_all(landed)
    from qp_assets.features import golden

    day = GOLDEN_DAY2 + timedelta(days=3)
    sink = landed.sink()
    sink.put(
        golden.landed_key(golden.DEFAULT_TOPIC, 0, 0, golden._at(day, 9)),
        golden.avro_bytes([golden.make_result(40, golden._at(day, 9, 1))]),
    )
    corrupt = sink.put(
        golden.landed_key(golden.DEFAULT_TOPIC, 0, 1, golden._at(day, 10)),
        golden.avro_bytes([golden.make_result(41, golden._at(day, 10, 1))])[:-40],  # truncated mid-block
    )
    defs = feature_definitions(landed.resources())
    job = defs.resolve_job_def("feature_processing_job")
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            partition_key=day.isoformat(), instance=instance, raise_on_error=False
        )
    assert not result.success
    checks = _checks(result)
    assert checks[("processing_metadata", "landed_files_readable")] is False
    evaluation = next(
        e.event_specific_data
        for e in result.all_events
        if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
        and e.event_specific_data.check_name == "landed_files_readable"
    )
    assert evaluation.metadata["unreadable"].value == [{"day": day.isoformat(), "bad_files": [corrupt]}]
    rows = read_rows("vqe_results", day=day, settings=landed.settings, namespace=landed.namespace)
    assert rows.column("run_id").to_pylist() == ["run-000040"]
