"""``wait_running`` against a scripted Connect REST API on loopback: what it restarts, and when it gives up."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from qp_assets.settings import Settings
from qp_assets.streaming.connect import ConnectError, wait_running


class FakeConnect:
    """``GET /connectors/x/status`` answers ``status_fn(restarts)``; ``POST .../restart`` is recorded."""

    def __init__(self, status_fn: Callable[[list[str]], dict]) -> None:
        self.restarts: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, payload: dict | None) -> None:
                data = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                self._send(200, status_fn(outer.restarts))

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                outer.restarts.append(self.path)
                self._send(202, None)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.settings = dataclasses.replace(
            Settings.from_env(), kafka_connect_url=f"http://127.0.0.1:{self.server.server_address[1]}"
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def status(connector: str, *tasks: str) -> dict:
    return {
        "name": "x",
        "connector": {"state": connector, "worker_id": "w"},
        "tasks": [{"id": i, "state": s, "worker_id": "w", "trace": f"boom {i}"} for i, s in enumerate(tasks)],
    }


def test_a_failed_task_is_restarted_once_and_the_wait_succeeds() -> None:
    fake = FakeConnect(lambda restarts: status("RUNNING", "RUNNING" if restarts else "FAILED"))
    try:
        assert wait_running(fake.settings, "x", 20)["tasks"][0]["state"] == "RUNNING"
        assert fake.restarts == ["/connectors/x/restart?includeTasks=true&onlyFailed=true"]
    finally:
        fake.close()


def test_a_task_that_fails_again_after_the_restart_raises_with_its_trace() -> None:
    fake = FakeConnect(lambda restarts: status("RUNNING", "FAILED"))
    try:
        start = time.monotonic()
        with pytest.raises(ConnectError, match="task 0 FAILED again after a restart: boom 0"):
            wait_running(fake.settings, "x", 60)
        assert 10 <= time.monotonic() - start < 15  # 10 s for the asynchronous restart to show
        assert len(fake.restarts) == 1
    finally:
        fake.close()


def test_an_unassigned_connector_is_restarted_after_the_grace_period() -> None:
    fake = FakeConnect(
        lambda restarts: status("RUNNING", "RUNNING") if restarts else status("UNASSIGNED", "RUNNING")
    )
    try:
        start = time.monotonic()
        wait_running(fake.settings, "x", 20, unassigned_grace_s=2)
        assert 2 <= time.monotonic() - start < 5
        assert fake.restarts == ["/connectors/x/restart?includeTasks=true&onlyFailed=false"]
    finally:
        fake.close()


def test_a_connector_that_never_runs_times_out_naming_its_last_status() -> None:
    fake = FakeConnect(lambda restarts: status("UNASSIGNED"))
    try:
        with pytest.raises(ConnectError, match="not RUNNING within 3 s .*UNASSIGNED"):
            wait_running(fake.settings, "x", 3, unassigned_grace_s=1.5)
        assert len(fake.restarts) == 1
    finally:
        fake.close()
