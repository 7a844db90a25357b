"""A real ``dagster-daemon`` on a private Dagster instance, for the fault cases that kill its processes.

:class:`LiveDaemon` starts ``dagster-daemon run -w workspace.yaml`` in its own process group on a fresh
``DAGSTER_HOME`` (the repo's ``dagster.yaml`` with run monitoring polling every ``monitor_poll_s``
seconds), against the running stack (the environment's ``QP_HOME`` / ``QP_PORT_OFFSET``), and waits until
the request sensor's first tick placed its cursor. It can be SIGKILLed (:meth:`kill9`: the daemon, its code
server and run workers, one process group) and started again on the same instance (:meth:`start`);
``stopped_sensors`` are stopped on the instance before the daemon first starts (``dagster sensor stop``,
about 8 s: e.g. the landing sensor, whose first tick on a new instance requests builds of the recent days);
:meth:`stop` ends it (SIGKILL of the group and of every process it started, by pid).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil

from tests.faults.tools import kill9

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REQUEST_SENSOR = "kafka_vqe_request_sensor"
T = TypeVar("T")


def poll(probe: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.2) -> T:
    """``probe()``'s first truthy value, asked every ``interval_s`` seconds; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(interval_s)


class LiveDaemon:
    """One ``dagster-daemon`` on instance ``home`` (see the module docstring); ``env`` is added to its
    environment (and so to its code server's and run workers')."""

    def __init__(
        self, home: Path, env: dict[str, str], monitor_poll_s: int = 2, stopped_sensors: tuple[str, ...] = ()
    ) -> None:
        from dagster import DagsterInstance

        home.mkdir(parents=True, exist_ok=True)
        config = (ROOT / "dagster.yaml").read_text()
        marker = "  poll_interval_seconds: 15\n"
        assert marker in config, "dagster.yaml: run_monitoring.poll_interval_seconds moved"
        (home / "dagster.yaml").write_text(
            config.replace(marker, f"  poll_interval_seconds: {monitor_poll_s}\n")
        )
        self.home = home
        self.env = {**os.environ, **env, "DAGSTER_HOME": str(home)}
        self.log_path = home / "daemon.log"
        self.proc: subprocess.Popen | None = None
        self.started: list[psutil.Process] = []  # every process seen in the daemon's tree
        self.instance = DagsterInstance.from_config(str(home))
        self.instance.get_runs(limit=1)  # create the SQLite storages before the daemon does
        for name in stopped_sensors:
            subprocess.run(
                [str(BIN / "dagster"), "sensor", "stop", name, "-m", "qp_assets.definitions"],
                cwd=ROOT, env=self.env, check=True, capture_output=True, timeout=120,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 180) -> float:
        """Start the daemon; return seconds until the request sensor's next tick stored a cursor."""
        t0 = time.monotonic()
        last = self.last_tick()
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

        def ticked() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log_tail()
            self.remember_tree()
            tick = self.last_tick()
            done = tick is not None and tick.status.value in ("SUCCESS", "SKIPPED")
            return done and (last is None or tick.tick_id != last.tick_id) and bool(self.cursor())

        poll(ticked, timeout_s, f"{REQUEST_SENSOR} tick of the daemon", interval_s=0.5)
        return time.monotonic() - t0

    def sensor_state(self) -> Any:
        from dagster._core.scheduler.instigation import InstigatorType

        for state in self.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            if state.instigator_name == REQUEST_SENSOR:
                return state
        return None

    def cursor(self) -> str | None:
        state = self.sensor_state()
        return state.instigator_data.cursor if state and state.instigator_data else None

    def last_tick(self) -> Any:
        """The request sensor's latest tick (``InstigatorTick``), or None."""
        state = self.sensor_state()
        if state is None:
            return None
        ticks = self.instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
        return ticks[0] if ticks else None

    def remember_tree(self) -> list[psutil.Process]:
        """The daemon's live descendants (code server, run workers), also kept for :meth:`stop`."""
        try:
            tree = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        self.started += [p for p in tree if p not in self.started]
        return tree

    def is_descendant(self, pid: int) -> bool:
        return any(p.pid == pid for p in self.remember_tree())

    def kill9(self) -> None:
        """SIGKILL the daemon's process group (daemon, code server, run workers) and reap it."""
        self.remember_tree()
        kill9(self.pid)
        assert self.proc is not None
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGKILL at once (the instance is private and thrown away; a graceful stop takes about 10 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.remember_tree()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(10)
        for proc in self.started:  # a code server or run worker that left the group
            with contextlib.suppress(psutil.Error):
                proc.kill()
        self.instance.dispose()

    def log_tail(self, chars: int = 3000) -> str:
        return "daemon log:\n" + self.log_path.read_text()[-chars:] if self.log_path.exists() else "no log"
