"""Every Spark Connect call is bounded: a server that accepts connections and never answers fails the session
open within the configured deadline, with an error naming the server and the gRPC status; a healthy session
afterwards still works in the same process (no lock left held)."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time

import pytest

from qp_assets.features import spark as spark_mod
from qp_assets.settings import Settings


@pytest.fixture
def silent_server():
    """A loopback TCP listener that accepts every connection and never sends a byte."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(srv.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield srv.getsockname()[1], accepted
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    srv.close()


def test_silent_server_fails_session_open_within_deadline(monkeypatch, silent_server):
    port, accepted = silent_server
    monkeypatch.setenv("QP_SPARK_CALL_TIMEOUT_S", "1")
    # remote_session switches this process to Connect mode; the undo puts the variable back as it was
    monkeypatch.setenv("SPARK_CONNECT_MODE_ENABLED", "1")
    settings = dataclasses.replace(Settings.from_env(), spark_connect_url=f"sc://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(RuntimeError) as err:
        spark_mod.remote_session(settings)
    elapsed = time.monotonic() - started
    assert f"sc://127.0.0.1:{port} did not answer: DEADLINE_EXCEEDED" in str(err.value)
    assert accepted, "the client never connected to the listener"
    # two session attempts, each a configuration call and a release call, 1 s each at most (plus slack)
    assert elapsed < 12, elapsed


@pytest.mark.parametrize("value", ["0", "-3", "soon"])
def test_call_timeout_must_be_positive(monkeypatch, value):
    monkeypatch.setenv("QP_SPARK_STREAM_TIMEOUT_S", value)
    with pytest.raises(ValueError, match=f"QP_SPARK_STREAM_TIMEOUT_S={value!r}"):
        spark_mod._call_timeouts()
