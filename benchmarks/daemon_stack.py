"""A fresh, isolated stack with a real ``dagster-daemon``, for the benchmarks that measure the product under
its daemon (``daemon_latency.py``, ``campaign.py``): own ``QP_HOME`` under a temp dir, ports shifted by a
free offset, a fresh Dagster instance; everything stopped and removed on exit (also on SIGTERM)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass
class DaemonStack:
    settings: Any
    instance: Any
    daemon: subprocess.Popen
    work: Path


def _wait_first_tick(instance, daemon: subprocess.Popen, timeout_s: float = 180) -> None:
    from dagster._core.scheduler.instigation import InstigatorType

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError("dagster-daemon exited")
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            if state.instigator_name == "kafka_vqe_request_sensor" and state.instigator_data:
                if state.instigator_data.cursor:
                    return
        time.sleep(1)
    raise TimeoutError("the request sensor did not tick")


def _kill_leftovers(marker: str) -> None:
    """SIGKILL processes whose command line names ``marker`` (this run's temp dir): the daemon's code server
    can outlive the daemon (it waits for a heartbeat timeout) and would keep the stack's files open."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and "dagster" in cmdline:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except OSError:
                pass


def _start_daemon(work: Path) -> subprocess.Popen:
    log = (work / "daemon.log").open("a")
    return subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def _stop_daemon(daemon: subprocess.Popen) -> None:
    if daemon.poll() is None:
        os.killpg(daemon.pid, 15)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, 9)


def _wait_runs_finished(instance, timeout_s: float = 300) -> None:
    """Wait until no run is queued, starting or in progress."""
    from dagster import DagsterRunStatus, RunsFilter

    busy = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
            DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while instance.get_runs_count(RunsFilter(statuses=busy)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"runs still in flight after {timeout_s:.0f} s")
        time.sleep(1)


def restart_daemon(stack: DaemonStack, fork_server: bool) -> None:
    """Once no run is in flight, stop the daemon, set the instance's ``run_launcher.config.fork_server``,
    start it again and wait for the request sensor's next tick (same instance and sensor cursors: no request
    is run twice).

    The stop signals the daemon's process group, run workers included: a feature run still finishing (its
    catch-up rounds, its checks) would fail its step and build again after the retry delay (60 s), and the
    next scenario would measure that recovery instead of the launch path (an Iceberg p50 of 48-51 s)."""
    import yaml

    _wait_runs_finished(stack.instance)
    _stop_daemon(stack.daemon)
    _kill_leftovers(str(stack.work))  # its code server and fork server
    path = Path(os.environ["DAGSTER_HOME"]) / "dagster.yaml"
    config = yaml.safe_load(path.read_text())
    config["run_launcher"].setdefault("config", {})["fork_server"] = fork_server
    path.write_text(yaml.safe_dump(config))
    started = time.time()
    stack.daemon = _start_daemon(stack.work)
    _wait_next_tick(stack.instance, stack.daemon, started)


def _wait_next_tick(instance, daemon: subprocess.Popen, since: float, timeout_s: float = 180) -> None:
    from dagster._core.scheduler.instigation import InstigatorType

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError("dagster-daemon exited")
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            if state.instigator_name == "kafka_vqe_request_sensor":
                ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
                if ticks and ticks[0].timestamp >= since:
                    return
        time.sleep(1)
    raise TimeoutError("the request sensor did not tick after the restart")


@contextlib.contextmanager
def fresh_daemon_stack(
    port_offset: int | None = None, env: dict[str, str] | None = None
) -> Iterator[DaemonStack]:
    """Bring a fresh stack up, start ``dagster-daemon`` on a fresh instance (``env`` added to its and this
    process's environment), wait for the request sensor's first tick, yield; stop and remove all after."""
    from qp_assets.stack.launcher import free_port_offset

    port_offset = free_port_offset() if port_offset is None else port_offset
    work = Path(tempfile.mkdtemp(prefix="qp-daemon-bench-"))
    os.environ.update({"QP_HOME": str(work / "qp"), "QP_PORT_OFFSET": str(port_offset), **(env or {})})
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "KAFKA_CONNECT_URL", "S3_ENDPOINT_URL",
                 "PUSHGATEWAY_URL", "PROMETHEUS_URL", "ICEBERG_CATALOG_URI", "DAGSTER_HOME"):  # fmt: skip
        os.environ.pop(name, None)
    (work / "qp").mkdir()
    lib = ROOT / ".qp" / "lib"
    if lib.exists():
        (work / "qp" / "lib").symlink_to(lib)
    from dagster import DagsterInstance

    from qp_assets.settings import prepare_dagster_home
    from qp_assets.stack import down, ensure_up

    daemon = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still stops the stack and daemon
    try:
        t0 = time.monotonic()
        try:
            settings = ensure_up()
        except Exception:
            for log_file in sorted((work / "qp" / "logs").glob("*.log")):
                print(f"--- {log_file.name}:\n" + log_file.read_text()[-1500:], file=sys.stderr)
            raise
        print(f"fresh stack up in {time.monotonic() - t0:.1f} s (ports +{port_offset})", flush=True)
        home = prepare_dagster_home(work / "dagster_home")
        with DagsterInstance.from_config(str(home)) as fresh:  # create the SQLite storages before the daemon
            fresh.get_runs(limit=1)  # does (two processes migrating a fresh database race)
        daemon = _start_daemon(work)
        with DagsterInstance.from_config(str(home)) as instance:
            _wait_first_tick(instance, daemon)
            stack = DaemonStack(settings, instance, daemon, work)
            yield stack
            daemon = stack.daemon  # restart_daemon may have replaced it
    except BaseException:
        daemon_log = work / "daemon.log"
        if daemon_log.exists():
            print("--- daemon.log (tail):\n" + daemon_log.read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        if daemon is not None:
            _stop_daemon(daemon)
        _kill_leftovers(str(work))
        from qp_assets.streaming.publisher import close_producers

        close_producers()  # before the brokers stop: no "Connection refused" lines from librdkafka
        down()
        shutil.rmtree(work, ignore_errors=True)
