"""A run launcher whose run workers Dagster's run monitoring can check, so a dead worker fails its run.

Dagster's ``DefaultRunLauncher`` starts each run in a local process and cannot tell whether that process is
still alive (``supports_check_run_worker_health`` is False): a run worker killed mid-VQE (``kill -9``, the
OOM killer, a reboot) leaves its run STARTED forever, so its request range is neither retried nor
dead-lettered. :class:`QpRunLauncher` is the same launcher plus that check. Every run worker records its
process id in the run's event log when it starts (the engine event "Started process for run (pid: N)");
the worker is alive while a process with that id exists and was started no later than that event (a
recycled pid belongs to a younger process). With ``run_monitoring`` enabled in ``dagster.yaml``, the
daemon polls every STARTED run and marks one whose worker is gone as failed; the request sensor's range
retry then runs its range again (docs/orchestration.md).

Scope: run workers on the daemon's host (the local deployment). A run whose pid is not recorded yet counts
as running. This module imports only Dagster and psutil: the daemon and webserver load it with the instance.
"""

from __future__ import annotations

import psutil
from dagster import DagsterEventType, DagsterRun
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus

#: Seconds a worker's process may appear to have started after the event that records its pid (clock
#: granularity of process start times).
START_SLACK_S = 2.0


def run_worker_pid(instance, run_id: str) -> tuple[int, float] | None:
    """(pid, event timestamp) from the run's "Started process for run" engine event, the latest one."""
    found = None
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = record.dagster_event
        meta = (event.event_specific_data.metadata if event and event.event_specific_data else None) or {}
        pid = meta.get("pid")
        if pid is not None and "Started process for run" in (event.message or ""):
            try:
                found = (int(pid.value), record.timestamp)
            except (TypeError, ValueError):
                continue
    return found


def worker_status(pid: int, started_at: float) -> CheckRunHealthResult:
    """RUNNING while process ``pid`` exists and is not younger than ``started_at`` (epoch seconds)."""
    try:
        created = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {pid} is gone")
    except psutil.Error as exc:  # e.g. access denied: it exists
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker process {pid}: {exc}")
    if created > started_at + START_SLACK_S:
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"run worker process {pid} is gone (the pid now belongs to a younger process)",
        )
    return CheckRunHealthResult(WorkerStatus.RUNNING)


class QpRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` plus a run worker health check (see the module docstring). Same config."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        recorded = run_worker_pid(self._instance, run.run_id)
        if recorded is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no run worker pid recorded yet")
        return worker_status(*recorded)
