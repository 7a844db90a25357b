"""A real ``dagster-webserver`` (+ ``dagster-daemon``) for the UI tests: processes, GraphQL, polling.

Both processes load ``workspace.yaml`` from the repo with ``DAGSTER_HOME`` a fresh directory holding the
repo's dagster.yaml, on a free loopback port; each runs in its own process group so that stopping it also
ends the code servers, run workers and Spark JVMs it started.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from orchestration_helpers import stop_process_groups

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOCATION = "qp_assets.definitions"
REPOSITORY = "__repository__"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dagster_home(parent: Path) -> Path:
    """A fresh DAGSTER_HOME under ``parent`` with the repo's dagster.yaml."""
    home = parent / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


@dataclass
class DagsterServer:
    """dagster-webserver and dagster-daemon on one instance."""

    home: Path
    logs: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DagsterServer:
        env = {**os.environ, **self.env, "DAGSTER_HOME": str(self.home)}
        commands = {
            "webserver": [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.port)],
            "daemon": [str(BIN / "dagster-daemon"), "run"],
        }
        for name, cmd in commands.items():
            with (self.logs / f"{name}.log").open("w") as log:
                self.procs[name] = subprocess.Popen(
                    [*cmd, "-w", "workspace.yaml"], cwd=ROOT, env=env, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
        return self

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(
            f"--- {name}.log ---\n{(self.logs / f'{name}.log').read_text(errors='replace')[-chars:]}"
            for name in self.procs
        )

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"dagster {name} exited with {proc.returncode}\n{self.log_tail()}")

    def graphql(self, query: str, variables: dict[str, Any] | None = None, timeout: float = 60) -> dict:
        resp = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=timeout
        )
        resp.raise_for_status()
        body = resp.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def wait_ready(self, timeout_s: float = 180) -> None:
        """Until the webserver answers and its code location is loaded (the daemon loads it alongside)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                data = self.graphql(
                    "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus"
                    " locationOrLoadError { __typename ... on PythonError { message } } } } } }",
                    timeout=10,
                )
                entries = data["workspaceOrError"]["locationEntries"]
                loaded = [e for e in entries if e["loadStatus"] == "LOADED"]
                errors = [e["locationOrLoadError"] for e in loaded if e["locationOrLoadError"]]
                if any(e["__typename"] == "PythonError" for e in errors):
                    raise RuntimeError(f"code location failed to load: {errors}")
                if entries and len(loaded) == len(entries):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise TimeoutError(f"dagster webserver not ready after {timeout_s:.0f} s\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM each process group, SIGKILL what is left after 20 s (run workers, code servers, JVMs)."""
        stop_process_groups(list(self.procs.values()), wait_s=20)

    # --- GraphQL helpers -------------------------------------------------------------------------------

    def sensor_selector(self, name: str) -> dict[str, str]:
        return {"repositoryName": REPOSITORY, "repositoryLocationName": LOCATION, "sensorName": name}

    def start_sensor(self, name: str, cursor: str | None = None) -> None:
        """Store ``cursor`` (when given) for sensor ``name`` and switch it on."""
        selector = self.sensor_selector(name)
        if cursor is not None:
            data = self.graphql(
                "mutation($s: SensorSelector!, $c: String) { setSensorCursor(sensorSelector: $s, cursor: $c)"
                " { __typename ... on PythonError { message } } }",
                {"s": selector, "c": cursor},
            )
            assert data["setSensorCursor"]["__typename"] == "Sensor", data
        data = self.graphql(
            "mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename"
            " ... on Sensor { sensorState { status } } ... on PythonError { message } } }",
            {"s": selector},
        )
        assert data["startSensor"]["__typename"] == "Sensor", data
        assert data["startSensor"]["sensorState"]["status"] == "RUNNING", data

    def runs(self, job: str | None = None, tags: dict[str, str] | None = None) -> list[dict]:
        flt: dict[str, Any] = {}
        if job:
            flt["pipelineName"] = job
        if tags:
            flt["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        data = self.graphql(
            "query($f: RunsFilter) { runsOrError(filter: $f) { __typename ... on Runs { results"
            " { runId jobName status tags { key value } } } } }",
            {"f": flt},
        )
        return data["runsOrError"]["results"]

    def run(self, run_id: str) -> dict:
        data = self.graphql(
            "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { runId jobName status"
            " startTime endTime tags { key value } } } }",
            {"id": run_id},
        )
        return data["runOrError"]

    def wait_run_finished(self, run_id: str, timeout_s: float) -> dict:
        """Poll the run until SUCCESS / FAILURE / CANCELED; TimeoutError with the daemon log otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            run = self.run(run_id)
            if run.get("status") in ("SUCCESS", "FAILURE", "CANCELED"):
                return run
            time.sleep(2)
        raise TimeoutError(f"run {run_id} not finished after {timeout_s:.0f} s\n{self.log_tail()}")

    def backfill(self, backfill_id: str) -> dict:
        data = self.graphql(
            "query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename"
            " ... on PartitionBackfill { id status numPartitions isAssetBackfill"
            " runs(limit: 50) { runId status } } } }",
            {"id": backfill_id},
        )
        return data["partitionBackfillOrError"]

    def wait_backfill_finished(self, backfill_id: str, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            backfill = self.backfill(backfill_id)
            if backfill.get("status") not in ("REQUESTED", "CANCELING", "FAILING"):
                return backfill
            time.sleep(2)
        raise TimeoutError(f"backfill {backfill_id} not finished after {timeout_s:.0f} s\n{self.log_tail()}")

    def run_failure(self, run_id: str) -> str:
        """The error messages of a failed run's failure events (for assertion messages)."""
        data = self.graphql(
            "query($id: ID!) { logsForRun(runId: $id) { __typename ... on EventConnection { events {"
            " __typename ... on MessageEvent { message } ... on ExecutionStepFailureEvent { stepKey"
            " error { message } } } } } }",
            {"id": run_id},
        )
        events = data["logsForRun"].get("events", [])
        failures = [e for e in events if e["__typename"] == "ExecutionStepFailureEvent"]
        return "\n".join(f"{e['stepKey']}: {e['error']['message'][:2000]}" for e in failures)
