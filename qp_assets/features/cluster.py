"""A local Spark standalone cluster (one master + one worker) from pyspark's own ``bin/spark-class``.

``start_local_cluster()`` starts ``org.apache.spark.deploy.master.Master`` (127.0.0.1:7077, UI 8090)
and one ``org.apache.spark.deploy.worker.Worker`` (1 core, 1 GiB, UI 8091) as process groups with logs
and PID files under ``<runtime_dir>/logs`` and ``<runtime_dir>/pids``, waits until the worker has
registered, and returns a ``LocalSparkCluster`` whose ``master_url`` goes to ``get_spark_session``.
``stop()`` ends exactly the processes it started (SIGTERM to their groups, SIGKILL after a grace period).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from qp_assets.settings import Settings
from qp_assets.stack import process


def spark_home() -> Path:
    """pyspark's install folder (it ships bin/spark-class and jars/)."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@dataclass
class LocalSparkCluster:
    """A running master + worker; ``master_url`` is ``spark://127.0.0.1:<port>``."""

    master_port: int
    master_webui_port: int
    worker_webui_port: int
    pids: dict[str, int] = field(default_factory=dict)
    pid_dir: Path | None = None

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    def alive_workers(self) -> int:
        """Workers in state ALIVE according to the master's JSON status page (0 if unreachable)."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.master_webui_port}/json/", timeout=2
            ) as resp:
                status = json.load(resp)
        except OSError:
            return 0
        return sum(1 for w in status.get("workers", []) if w.get("state") == "ALIVE")

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop worker then master (process groups we started), SIGKILL after ``grace_s`` seconds."""
        for role in ("worker", "master"):
            pid = self.pids.pop(role, None)
            if pid is None:
                continue
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                time.sleep(0.2)
            else:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if self.pid_dir is not None:
                (self.pid_dir / f"spark-{role}.pid").unlink(missing_ok=True)

    def __enter__(self) -> LocalSparkCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawn(role: str, args: list[str], settings: Settings, extra_env: dict[str, str]) -> int:
    logs = settings.runtime_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        {
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable,
            "SPARK_NO_DAEMONIZE": "1",
            **extra_env,
        }
    )
    # the stack's spawn: a new session, the log appended, SIGTERM at its default (so stop() needs no SIGKILL)
    cmd = [str(spark_home() / "bin" / "spark-class"), *args]
    return process.spawn(cmd, logs / f"spark-{role}.log", env, settings.runtime_dir).pid


def start_local_cluster(
    settings: Settings | None = None,
    master_port: int = 7077,
    master_webui_port: int = 8090,
    worker_webui_port: int = 8091,
    worker_memory: str = "1g",
    worker_cores: int = 1,
    timeout_s: float = 90.0,
) -> LocalSparkCluster:
    """Start a master and one worker on 127.0.0.1 and wait until the worker is ALIVE.

    Raises RuntimeError (naming the log file) if a port is taken or the worker does not register
    within ``timeout_s`` seconds; anything already started is stopped again in that case.
    """
    settings = settings or Settings.from_env()
    for port in (master_port, master_webui_port, worker_webui_port):
        if port_open(port):
            raise RuntimeError(
                f"port {port} on 127.0.0.1 is already in use; pick other ports for the Spark cluster"
            )
    pid_dir = settings.runtime_dir / "pids"
    pid_dir.mkdir(parents=True, exist_ok=True)
    cluster = LocalSparkCluster(master_port, master_webui_port, worker_webui_port, pid_dir=pid_dir)
    scratch = settings.runtime_dir / "tmp" / "spark-cluster"  # executors' block and shuffle files, not /tmp
    scratch.mkdir(parents=True, exist_ok=True)
    daemon_env = {"SPARK_DAEMON_MEMORY": "512m", "SPARK_LOCAL_DIRS": str(scratch)}
    try:
        cluster.pids["master"] = _spawn(
            "master",
            [
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(master_port),
                "--webui-port",
                str(master_webui_port),
            ],
            settings,
            daemon_env,
        )
        process.write_pidfile(pid_dir / "spark-master.pid", cluster.pids["master"])
        deadline = time.monotonic() + timeout_s
        while not port_open(master_port):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Spark master did not open port {master_port}; see {settings.runtime_dir}/logs/spark-master.log"
                )
            time.sleep(0.5)
        work_dir = settings.runtime_dir / "spark-work"
        work_dir.mkdir(parents=True, exist_ok=True)
        # earlier applications' jar copies, unless another worker of this runtime still uses them
        if process.live_pid(pid_dir / "spark-worker.pid") is None:
            for finished in work_dir.glob("app-*"):  # a copy of every jar per application (about 120 MB)
                shutil.rmtree(finished, ignore_errors=True)
        cluster.pids["worker"] = _spawn(
            "worker",
            [
                "org.apache.spark.deploy.worker.Worker",
                cluster.master_url,
                "--host",
                "127.0.0.1",
                "--webui-port",
                str(worker_webui_port),
                "--memory",
                worker_memory,
                "--cores",
                str(worker_cores),
                "--work-dir",
                str(work_dir),
            ],
            settings,
            daemon_env,
        )
        process.write_pidfile(pid_dir / "spark-worker.pid", cluster.pids["worker"])
        while cluster.alive_workers() < 1:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Spark worker did not register; see {settings.runtime_dir}/logs/spark-worker.log"
                )
            time.sleep(0.5)
    except BaseException:
        cluster.stop()
        raise
    return cluster
