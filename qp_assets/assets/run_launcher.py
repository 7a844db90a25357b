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
as running.

Warm run workers (config ``fork_server``, default true): a run is started by forking a process that has
already imported Dagster, the definitions and the simulator (``assets.run_forkserver``), instead of a cold
``spawn`` of the code server (about 3 s of imports before the run starts and seconds more inside its first
VQE step on the 2-core VM). The child runs what ``dagster api execute_run`` runs. The fork server is
started by the first launch of a code location, which waits for its imports (about as long as a cold spawn
would take), is replaced the same way when a loaded source file changed (a run never executes old code), and
exits with the launching process. When it fails to start or to answer, the run takes the default path, and
so do the code location's launches of the next 10 minutes: a launch never depends on it.
Runs it started carry the tag ``qp/run_worker_pid``; terminating one interrupts that process (SIGINT, as
the code server interrupts its own run processes), which cancels the run.

This module imports only Dagster, psutil and the standard library: the daemon and webserver load it with
the instance.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import threading
import time
from typing import Any

import psutil
from dagster import DagsterEventType, DagsterRun, Field
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._serdes import serialize_value

logger = logging.getLogger(__name__)

#: Run tag of runs started by the fork server: the run worker's pid.
FORKED_PID_TAG = "qp/run_worker_pid"
#: Seconds the launcher waits for the fork server's answer to one fork request.
FORK_REPLY_TIMEOUT_S = 10.0
#: Seconds the launcher waits for a new fork server's imports (about 5 s on the idle 2-core VM).
FORK_SERVER_START_TIMEOUT_S = 60.0
#: Seconds after a fork server failed during which launches of its code location take the default path
#: without trying another (a code location that cannot load would otherwise cost every launch a start).
FORK_SERVER_RETRY_S = 600.0

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


class ForkServerError(RuntimeError):
    """The fork server did not start a run worker (dead, stale, or no answer in time)."""


class StaleForkServer(ForkServerError):
    """A source file the fork server loaded changed: it exited; start a fresh one."""


class ForkServer:
    """Client of one ``assets.run_forkserver`` process (JSON lines over its stdin/stdout)."""

    def __init__(self, job_origin, cwd: str | None) -> None:
        self._buffer = b""
        self.ready = False
        self.process = subprocess.Popen(
            [job_origin.executable_path, "-m", "qp_assets.assets.run_forkserver", serialize_value(job_origin)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=cwd,
        )  # fmt: skip

    def _line(self, timeout_s: float) -> dict[str, Any] | None:
        """The next JSON line, or None when none arrived within ``timeout_s``; raises when the process ended."""
        deadline = time.monotonic() + timeout_s
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if not select.select([fd], [], [], max(0.0, left))[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise ForkServerError(f"fork server exited (code {self.process.poll()})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def wait_ready(self, timeout_s: float) -> None:
        """Return once the server reported its imports done; ForkServerError if it failed or took longer."""
        if self.ready:
            return
        message = self._line(timeout_s)
        if message is None:
            raise ForkServerError(f"fork server not ready within {timeout_s:.0f} s")
        if not message.get("ready"):
            raise ForkServerError(f"fork server failed to start: {message.get('error')}")
        self.ready = True
        logger.info("run fork server %s ready (imports %.1f s)", message["pid"], message["import_s"])

    def fork(self, execute_run_args: str, timeout_s: float = FORK_REPLY_TIMEOUT_S) -> int:
        """Start one run worker; its pid."""
        try:
            self.process.stdin.write((json.dumps({"execute_run_args": execute_run_args}) + "\n").encode())
            self.process.stdin.flush()
        except OSError as exc:
            raise ForkServerError(f"fork server gone: {exc}") from exc
        reply = self._line(timeout_s)
        if reply is None:
            raise ForkServerError(f"fork server did not answer within {timeout_s:.0f} s")
        if "stale" in reply:
            raise StaleForkServer(f"fork server's source changed: {reply['stale']}")
        if "pid" not in reply:
            raise ForkServerError(f"fork server refused: {reply}")
        return int(reply["pid"])

    def close(self) -> None:
        """Close its stdin (it exits; run workers it started go on) and reap it."""
        try:
            self.process.stdin.close()
            self.process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()


class QpRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` plus a run worker health check and warm run workers (module docstring).

    Config: ``fork_server`` (bool, default true): start runs from the fork server when it is ready."""

    def __init__(self, inst_data=None, fork_server: bool = True) -> None:
        super().__init__(inst_data=inst_data)
        self._fork_server_enabled = fork_server
        self._fork_servers: dict[str, ForkServer] = {}
        self._fork_failed_at: dict[str, float] = {}  # code location -> monotonic time of its last failure
        self._fork_lock = threading.Lock()
        self._gpu_pool_checked = False

    @classmethod
    def config_type(cls):
        return {"fork_server": Field(bool, is_required=False, default_value=True)}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, fork_server=config_value.get("fork_server", True))

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        recorded = run_worker_pid(self._instance, run.run_id)
        if recorded is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no run worker pid recorded yet")
        return worker_status(*recorded)

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if not self._gpu_pool_checked:
            self._gpu_pool_checked = True
            self._size_gpu_pool(run)
        pid = self._fork(run) if self._fork_server_enabled and run.job_code_origin is not None else None
        if pid is None:
            super().launch_run(context)
            return
        self._instance.add_run_tags(run.run_id, {FORKED_PID_TAG: str(pid)})
        self._instance.report_engine_event(f"Run worker forked from the warm fork server (pid: {pid}).", run)

    def _size_gpu_pool(self, run: DagsterRun) -> None:
        """Once per launcher: pool ``gpu`` gets one slot per GPU of this host unless its limit was set
        (``runner.gpu.size_gpu_pool``). Never fails a launch."""
        from qp_assets.runner.gpu import GPU_POOL, gpu_ids, size_gpu_pool

        try:
            limit = size_gpu_pool(self._instance, len(gpu_ids()))
        except Exception as exc:  # noqa: BLE001 - the pool keeps its limit; the run is launched anyway
            self._instance.report_engine_event(f"pool {GPU_POOL!r} not sized to the GPUs: {exc!r}", run)
            return
        if limit is not None:
            self._instance.report_engine_event(
                f"pool {GPU_POOL!r}: {limit} slots, one per GPU of this host", run
            )

    def _fork(self, run: DagsterRun) -> int | None:
        """The pid of a run worker forked for ``run``, or None: the default path. The first launch of a code
        location starts its fork server and waits for it (about as long as a cold spawn); a server whose
        sources changed is replaced the same way; one that fails is dropped, and the code location's launches
        take the default path for :data:`FORK_SERVER_RETRY_S`."""
        from dagster._grpc.types import ExecuteRunArgs

        origin = run.job_code_origin
        key = serialize_value(origin.repository_origin)
        args = serialize_value(
            ExecuteRunArgs(job_origin=origin, run_id=run.run_id, instance_ref=self._instance.get_ref())
        )
        cwd = getattr(origin.repository_origin.code_pointer, "working_directory", None)
        with self._fork_lock:
            if time.monotonic() - self._fork_failed_at.get(key, -FORK_SERVER_RETRY_S) < FORK_SERVER_RETRY_S:
                return None
            for _attempt in range(2):  # a stale server is replaced once
                server = self._fork_servers.get(key)
                if server is None:
                    server = self._fork_servers[key] = ForkServer(origin, cwd)
                try:
                    server.wait_ready(FORK_SERVER_START_TIMEOUT_S)
                    return server.fork(args)
                except ForkServerError as exc:
                    self._fork_servers.pop(key, None)
                    server.close()
                    if not isinstance(exc, StaleForkServer):
                        logger.warning("run %s: %s; launching it the default way", run.run_id, exc)
                        self._fork_failed_at[key] = time.monotonic()
                        return None
            return None

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        if run is None or run.is_finished or FORKED_PID_TAG not in run.tags:
            return super().terminate(run_id)
        self._instance.report_run_canceling(run)
        pid = int(run.tags[FORKED_PID_TAG])
        recorded = run_worker_pid(self._instance, run_id)  # not yet: the fork was just now
        status = worker_status(pid, recorded[1] if recorded else time.time())
        if status.status != WorkerStatus.RUNNING:
            self._instance.report_engine_event(f"Cannot terminate: {status.msg}", run, cls=self.__class__)
            return False
        os.kill(pid, signal.SIGINT)  # what the code server sends its own run process (dagster's interrupts)
        return True

    def dispose(self) -> None:
        with self._fork_lock:
            for server in self._fork_servers.values():
                server.close()
            self._fork_servers.clear()
        super().dispose()
