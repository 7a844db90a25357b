"""Asset checks of the feature tables (one multi-check op reading Iceberg through PyIceberg).

Every check is blocking: a failed check fails its step, so the run (and a backfill of it) shows the
failure instead of a green materialization. Checked days are the run's partition window (``dagster/partition`` or the partition range tags); a run
without partition tags checks the whole tables. The variational tolerance is ``QP_VARIATIONAL_TOL_HA``
(hartree, default 1e-6).
"""

from collections.abc import Iterator
from datetime import date, timedelta

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSpec, multi_asset_check

from qp_assets.assets import check_logic
from qp_assets.assets.features import feature_asset_key
from qp_assets.features.transforms import TABLES
from qp_assets.resources.core import IcebergCatalogResource
from qp_assets.settings import load_env

PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def days_from_tags(tags: dict[str, str]) -> list[date] | None:
    """Days a run covers according to its tags (None = not partitioned)."""
    if tags.get(PARTITION_TAG):
        return [date.fromisoformat(tags[PARTITION_TAG])]
    if tags.get(RANGE_START_TAG) and tags.get(RANGE_END_TAG):
        first, last = date.fromisoformat(tags[RANGE_START_TAG]), date.fromisoformat(tags[RANGE_END_TAG])
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return None


def _check_specs() -> list[AssetCheckSpec]:
    specs = [
        AssetCheckSpec(
            "no_null_keys",
            asset=feature_asset_key(name),
            description=f"key columns {spec.keys} never null",
            blocking=True,
        )
        for name, spec in TABLES.items()
    ]
    specs.append(
        AssetCheckSpec(
            "variational_bound",
            asset=feature_asset_key("vqe_results"),
            description="VQE total energy >= exact reference - tolerance (hartree)",
            blocking=True,
        )
    )
    specs.append(
        AssetCheckSpec(
            "exact_error_consistent",
            asset=feature_asset_key("vqe_results"),
            description="error_vs_exact_mha = (total_energy - exact_energy) * 1000 (within 1e-6 mHa)",
            blocking=True,
        )
    )
    specs.append(
        AssetCheckSpec(
            "iterations_match_results",
            asset=feature_asset_key("vqe_iterations"),
            additional_deps=[feature_asset_key("vqe_results")],
            description="each run has num_iterations distinct iteration rows whose minimum energy is the result's",
            blocking=True,
        )
    )
    specs.append(
        AssetCheckSpec(
            "landed_files_readable",
            asset=feature_asset_key("processing_metadata"),
            description="the latest build of each day could decode every landed file (none silently dropped)",
            blocking=True,
        )
    )
    return specs


def _read(iceberg: IcebergCatalogResource, table: str, days: list[date] | None):
    """The checked window of ``table`` in one scan (all days when ``days`` is None)."""
    from qp_assets.features.catalog import read_rows

    return read_rows(table, settings=iceberg.settings(), namespace=iceberg.namespace, days=days)


@multi_asset_check(specs=_check_specs(), can_subset=True, name="feature_table_checks")
def feature_table_checks(
    context: AssetCheckExecutionContext, iceberg: IcebergCatalogResource
) -> Iterator[AssetCheckResult]:
    days = days_from_tags(context.run.tags)
    label = "all days" if days is None else f"{days[0]}..{days[-1]}"
    cache: dict[str, object] = {}

    def rows(table: str):
        if table not in cache:
            cache[table] = _read(iceberg, table, days)
        return cache[table]

    def result(key, passed: bool, **metadata: object) -> AssetCheckResult:
        return AssetCheckResult(
            asset_key=key.asset_key, check_name=key.name, passed=passed, metadata={"days": label, **metadata}
        )

    selected = context.selected_asset_check_keys
    for key in selected:
        table = key.asset_key.path[-1]
        if key.name == "no_null_keys":
            tbl = rows(table)
            nulls = check_logic.null_key_rows(tbl, TABLES[table].keys)
            dups = check_logic.duplicate_keys(tbl, TABLES[table].keys)
            yield result(
                key, nulls == 0 and not dups, rows=tbl.num_rows, null_keys=nulls, duplicate_keys=len(dups)
            )
        elif key.name == "variational_bound":
            tol = load_env().variational_tol_ha
            bad = check_logic.variational_bound_violations(rows("vqe_results"), tol)
            yield result(
                key, not bad, runs=rows("vqe_results").num_rows, tolerance_ha=tol, violations=bad[:20]
            )
        elif key.name == "exact_error_consistent":
            bad = check_logic.exact_error_inconsistencies(rows("vqe_results"))
            yield result(key, not bad, runs=rows("vqe_results").num_rows, inconsistent=bad[:20])
        elif key.name == "landed_files_readable":
            bad = check_logic.unreadable_landed_files(rows("processing_metadata"))
            yield result(
                key,
                not bad,
                days_with_unreadable_files=len(bad),
                unreadable=bad[:20],
                fix="inspect the files, move them out of raw/topics/ (e.g. to quarantine/), rebuild the day",
            )
        elif key.name == "iterations_match_results":
            bad = check_logic.iteration_inconsistencies(rows("vqe_results"), rows("vqe_iterations"))
            yield result(
                key,
                not bad,
                runs=rows("vqe_results").num_rows,
                iteration_rows=rows("vqe_iterations").num_rows,
                inconsistent=bad[:20],
            )
