"""Run monitoring of the Postgres instance profiles frees the pool slot a killed run kept (issue 14).

* ``dagster.postgres.yaml`` (production, Kubernetes) and ``infra/compose/dagster.yaml``: accepted by
  Dagster's own instance-config validation, with run monitoring on, no resume (the request sensor's range
  retry re-runs a failed range) and the slots of a finished run freed 10 s after its end; they name the
  psycopg2 driver (SQLAlchemy 2.1 would pick psycopg 3, which is not installed, for ``postgresql://``).
* ``dagster.postgres.yaml`` on a real PostgreSQL server (this machine's ``initdb``/``postgres``, a
  throw-away data directory, a free loopback port, stopped and removed at the end): a run that failed
  while its ``run_vqe_request`` step held the only ``gpu`` slot (a run worker killed inside the op) keeps
  the slot, so the range retry's step is blocked; the monitoring daemon's own iteration
  (``MonitoringDaemon.run_iteration``, which ``dagster-daemon`` runs every ``poll_interval_seconds``)
  frees it ``free_slots_after_run_end_seconds`` after the run's end and not before, and the waiting step
  then gets it. Not covered: the K8s launcher's worker health check (needs a cluster).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Seconds after a run's end at which both profiles free its pool slots (their run_monitoring section).
FREE_AFTER_S = 10
PG_USER = "dagster"
#: Seconds the throw-away server may take to accept connections, and to stop.
PG_START_TIMEOUT_S = 30.0
PG_STOP_TIMEOUT_S = 10.0

PROFILES = {
    # profile file -> (env vars it reads, start_timeout_seconds)
    "dagster.postgres.yaml": (
        ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD"),
        300,
    ),
    "infra/compose/dagster.yaml": (
        ("DAGSTER_PG_HOST", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"),
        180,
    ),
}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_postgres_profiles_validate_with_run_monitoring(profile: str, tmp_path: Path, monkeypatch) -> None:
    from dagster._core.instance.ref import InstanceRef

    env_vars, start_timeout_s = PROFILES[profile]
    shutil.copy(ROOT / profile, tmp_path / "dagster.yaml")
    for var in env_vars:
        monkeypatch.setenv(var, "5432" if var.endswith("_PORT") else "x")
    ref = InstanceRef.from_dir(str(tmp_path))  # raises DagsterInvalidConfigError on an invalid profile
    assert ref.run_storage_data.class_name == "PostgresRunStorage"
    assert ref.event_storage_data.class_name == "PostgresEventLogStorage"
    # psycopg2 is the driver installed (constraints.txt); SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3
    assert ref.run_storage_data.config_dict["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert ref.settings["run_monitoring"] == {
        "enabled": True,
        "poll_interval_seconds": 15,
        "start_timeout_seconds": start_timeout_s,
        "cancel_timeout_seconds": 180,
        "max_resume_run_attempts": 0,
        "free_slots_after_run_end_seconds": FREE_AFTER_S,
    }


@pytest.mark.services
def test_monitoring_daemon_frees_the_pool_slot_of_a_killed_run_on_postgres(
    tmp_path: Path, monkeypatch
) -> None:
    from dagster import DagsterInstance, DagsterRunStatus
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import EmptyWorkspaceTarget
    from dagster._daemon.daemon import MonitoringDaemon

    with _postgres(tmp_path) as port:
        for var, value in {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(port),
            "DAGSTER_PG_DB": "postgres",
            "DAGSTER_PG_USER": PG_USER,
            "DAGSTER_PG_PASSWORD": "unused",  # trust authentication
        }.items():
            monkeypatch.setenv(var, value)
        home = tmp_path / "dagster_home"
        home.mkdir()
        shutil.copy(ROOT / "dagster.postgres.yaml", home / "dagster.yaml")
        instance = DagsterInstance.from_config(str(home))
        try:
            storage = instance.event_log_storage
            storage.set_concurrency_slots("gpu", 1)  # as `dagster instance concurrency set gpu 1`
            killed, retry = (_started_run(instance) for _ in range(2))
            assert storage.claim_concurrency_slot("gpu", killed, "run_vqe_request").is_claimed
            assert not storage.claim_concurrency_slot("gpu", retry, "run_vqe_request").is_claimed
            instance.report_run_failed(
                instance.get_run_by_id(killed), "run worker killed (SIGKILL) inside run_vqe_request"
            )
            end = instance.get_run_record_by_id(killed).end_time
            assert storage.get_concurrency_info("gpu").active_run_ids == {killed}  # the leak

            daemon = MonitoringDaemon(interval_seconds=instance.run_monitoring_poll_interval_seconds)
            last_held = freed_by = None
            with WorkspaceProcessContext(instance, EmptyWorkspaceTarget()) as context:
                while time.time() < end + FREE_AFTER_S + 5:
                    started = time.time()
                    assert [e for e in daemon.run_iteration(context) if e is not None] == []
                    if killed not in storage.get_concurrency_info("gpu").active_run_ids:
                        freed_by = time.time()
                        break
                    last_held = started
                    time.sleep(0.5)
            assert freed_by is not None, (
                f"gpu slot of failed run {killed} not freed {FREE_AFTER_S + 5} s after its end"
            )
            # held through every iteration up to about FREE_AFTER_S after the end, freed within 2 s of it
            assert last_held is not None and last_held - end > FREE_AFTER_S - 1.5, (last_held, end)
            assert FREE_AFTER_S <= freed_by - end < FREE_AFTER_S + 2, (freed_by, end)
            assert storage.claim_concurrency_slot("gpu", retry, "run_vqe_request").is_claimed
            assert storage.get_concurrency_info("gpu").active_run_ids == {retry}
            # the retry's run is left alone (the default launcher has no worker health check to fail it)
            assert instance.get_run_by_id(retry).status == DagsterRunStatus.STARTED
            assert instance.get_run_by_id(killed).status == DagsterRunStatus.FAILURE
            # dagster-daemon runs this iteration on this profile
            assert MonitoringDaemon.daemon_type() in instance.get_required_daemon_types()
        finally:
            instance.dispose()


def _started_run(instance) -> str:
    """Id of a new STARTED run of a one-op job whose op is in pool ``gpu`` (as ``run_vqe_request``)."""
    from dagster import DagsterEvent, DagsterEventType, job, op

    @op(pool="gpu")
    def run_vqe_request() -> None:
        return None

    @job(name="gpu_pool_job")
    def gpu_pool_job():
        run_vqe_request()

    run = instance.create_run_for_job(job_def=gpu_pool_job)
    start = DagsterEvent(
        event_type_value=DagsterEventType.RUN_START.value, job_name=run.job_name, message="start"
    )
    instance.handle_run_event(run.run_id, start)
    return run.run_id


@contextlib.contextmanager
def _postgres(base: Path) -> Iterator[int]:
    """A throw-away PostgreSQL server on a free 127.0.0.1 port; yields the port.

    Superuser ``PG_USER``, trust authentication, database ``postgres``, no Unix socket, fsync off. The data
    directory is ``base/pg``; run as root, the server runs as the ``postgres`` account (it refuses root)
    from a directory that account can reach (pytest's base temp directory is root-only), removed at the
    end. The server is always stopped (fast shutdown, SIGKILL after ``PG_STOP_TIMEOUT_S``); its log is
    ``base/postgres.log``. Skips when the server binaries are not installed.
    """
    initdb, postgres = shutil.which("initdb"), shutil.which("postgres")
    if not (initdb and postgres):
        pytest.skip("PostgreSQL server binaries (initdb, postgres) not on PATH")
    as_root = os.geteuid() == 0
    account = pwd.getpwnam("postgres") if as_root else None
    parent = Path(tempfile.mkdtemp(prefix="qp-pg-")) if as_root else base
    ids = {"user": account.pw_uid, "group": account.pw_gid} if account else {}
    if account:
        os.chown(parent, account.pw_uid, account.pw_gid)
    data = parent / "pg"
    log_path = base / "postgres.log"
    proc = None
    try:
        done = subprocess.run(
            [initdb, "-D", str(data), "-U", PG_USER, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
            cwd=parent, capture_output=True, text=True, timeout=60, **ids,
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"initdb exited {done.returncode}: {done.stderr[-2000:]}")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [postgres, "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
                 "-c", "unix_socket_directories=", "-c", "fsync=off", "-c", "shared_buffers=16MB"],
                cwd=parent, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **ids,
            )  # fmt: skip
        _wait_accepting(proc, port, log_path)
        yield port
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # fast shutdown: disconnects clients, no wait for them
            try:
                proc.wait(timeout=PG_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=PG_STOP_TIMEOUT_S)
        if as_root:
            shutil.rmtree(parent, ignore_errors=True)


def _wait_accepting(proc: subprocess.Popen, port: int, log_path: Path) -> None:
    """Return once the server at ``port`` accepts a connection; RuntimeError (with its log) if it exits
    first or is not up within ``PG_START_TIMEOUT_S``."""
    import psycopg2

    deadline = time.monotonic() + PG_START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited ({proc.returncode}): {log_path.read_text()[-2000:]}")
        try:
            psycopg2.connect(
                host="127.0.0.1", port=port, user=PG_USER, dbname="postgres", connect_timeout=2
            ).close()
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"postgres on port {port} not up within {PG_START_TIMEOUT_S:.0f} s: "
                    f"{log_path.read_text()[-2000:]}"
                ) from None
            time.sleep(0.2)
