"""Run tags by kind of work, and the run coordinator that puts them on every queued run.

``qp/kind`` drives the run queue's tag concurrency limits (``dagster.yaml``: one feature run at a time).
Jobs carry their kind as job tags (``feature_processing_job``, ``vqe_runner_job``), so sensor, schedule,
job-page and ``dagster job execute`` runs have it. Runs that materialize the feature assets through
Dagster's implicit asset job do not: the UI's "Materialize" on the asset graph, asset backfills and
declarative automation launch ``__ASSET_JOB``, which has no tags and cannot be given any from the
definitions (Dagster 1.13). :class:`QpRunCoordinator`, the ``QueuedRunCoordinator`` of ``dagster.yaml``,
closes that gap: when a run is submitted it adds the kind of the assets it selects, so every queued run
of the feature tables carries ``qp/kind=features`` whichever way it was launched.

This module imports only Dagster: the webserver and the daemon load it with the instance.
"""

from __future__ import annotations

from collections.abc import Mapping

from dagster import AssetKey, DagsterRun
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext

KIND_TAG = "qp/kind"
#: Asset group (and asset key prefix) of the ten feature tables.
FEATURE_GROUP = "quantum_features"
FEATURE_RUN_TAGS: Mapping[str, str] = {KIND_TAG: "features"}
VQE_RUN_TAGS: Mapping[str, str] = {KIND_TAG: "vqe"}


def kind_tags_for_assets(asset_keys: frozenset[AssetKey] | None) -> dict[str, str]:
    """Tags a run selecting ``asset_keys`` must carry: ``FEATURE_RUN_TAGS`` if it touches a feature table."""
    if any(key.path[0] == FEATURE_GROUP for key in asset_keys or ()):
        return dict(FEATURE_RUN_TAGS)
    return {}


def missing_run_tags(run: DagsterRun) -> dict[str, str]:
    """The kind tags ``run`` lacks (from its asset and asset-check selection); a tag it has is kept."""
    keys = set(run.asset_selection or ())
    keys |= {check.asset_key for check in run.asset_check_selection or ()}
    return {k: v for k, v in kind_tags_for_assets(frozenset(keys)).items() if k not in run.tags}


class QpRunCoordinator(QueuedRunCoordinator):
    """``QueuedRunCoordinator`` that first adds the run's missing kind tags (see the module docstring).

    Same config as ``QueuedRunCoordinator``; the tags are stored before the run is enqueued, so the queue's
    tag concurrency limits see them.
    """

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        missing = missing_run_tags(run)
        if missing:
            self._instance.add_run_tags(run.run_id, missing)
            run = self._instance.get_run_by_id(run.run_id) or run
            context = SubmitRunContext(run, context.workspace)
        return super().submit_run(context)
