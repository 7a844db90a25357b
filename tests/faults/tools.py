"""Fault tooling for the fault-injection suite: loopback only, bounded, self-stopping.

* :class:`FaultProxy`: a TCP proxy on 127.0.0.1 in front of one loopback service. Modes: ``forward``
  (relay both ways), ``stall`` (accept, read and hold, never answer; relaying connections stop relaying),
  ``reset`` (close every connection with a TCP RST). It stops itself after ``max_lifetime_s``.
* :func:`stopped`: SIGSTOP a process group for a while, SIGCONT guaranteed (finally, and a timer thread
  as a second guard if the test thread dies).
* :func:`kill9`: SIGKILL a process group and wait until its leader is gone.
* :func:`run_audit`: ``qp_assets.audit.audit_day`` of one case's request-id prefix, counts printed;
  :func:`lost_and_duplicated` reads the two numbers of the fault table from its report.
* :data:`LEDGER`: cases whose requests end as Iceberg rows register here (:func:`expect`);
  ``test_zz_audit.py`` then builds each day once and audits every case (one Spark build for the suite
  instead of one per case).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import urlsplit, urlunsplit

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class FaultProxy:
    """Loopback TCP proxy ``127.0.0.1:<port>`` -> ``target``; switch faults with :meth:`set_mode`."""

    def __init__(self, target_host: str, target_port: int, max_lifetime_s: float = 600.0) -> None:
        if target_host not in LOOPBACK:
            raise ValueError(f"target_host: the fault proxy only targets loopback, got {target_host!r}")
        self.target = (target_host, target_port)
        self.mode = "forward"
        self.connections = 0
        self._stop = threading.Event()
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._deadline = time.monotonic() + max_lifetime_s
        threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True).start()

    @classmethod
    def for_url(cls, url: str, max_lifetime_s: float = 600.0) -> tuple[FaultProxy, str]:
        """A proxy in front of ``url``'s host:port and the same URL pointing at the proxy."""
        parts = urlsplit(url)
        proxy = cls(parts.hostname or "", parts.port or 80, max_lifetime_s)
        return proxy, urlunsplit(parts._replace(netloc=f"127.0.0.1:{proxy.port}"))

    def set_mode(self, mode: str) -> None:
        if mode not in ("forward", "stall", "reset"):
            raise ValueError(f"mode: expected forward, stall or reset, got {mode!r}")
        self.mode = mode
        if mode == "reset":
            with self._lock:
                socks = list(self._socks)
            for sock in socks:
                _rst(sock)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._server.close()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _alive(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._deadline

    def _accept_loop(self) -> None:
        while self._alive():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            self.connections += 1
            if self.mode == "reset":
                _rst(client)
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()
        self.close()

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        with self._lock:
            self._socks.add(client)
        try:
            while self.mode == "stall" and self._alive():  # hold: read and discard, never answer
                if select.select([client], [], [], 0.2)[0] and not client.recv(65536):
                    return
            if not self._alive() or self.mode == "reset":
                return
            upstream = socket.create_connection(self.target, timeout=5)
            with self._lock:
                self._socks.add(upstream)
            pair = {client: upstream, upstream: client}
            while self._alive():
                if self.mode != "forward":
                    if self.mode == "reset":
                        return
                    time.sleep(0.2)  # stalled mid-connection: stop relaying
                    continue
                readable = select.select(list(pair), [], [], 0.2)[0]
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    pair[sock].sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with self._lock:
                        self._socks.discard(sock)
                    with contextlib.suppress(OSError):
                        sock.close()


def _rst(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer sees a connection reset."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


@contextlib.contextmanager
def stopped(pgid: int, max_s: float) -> Iterator[None]:
    """SIGSTOP process group ``pgid``; SIGCONT on exit and, as a second guard, after ``max_s`` seconds."""
    resumed = threading.Event()

    def resume() -> None:
        if not resumed.is_set():
            resumed.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGCONT)

    guard = threading.Timer(max_s, resume)
    guard.daemon = True
    os.killpg(pgid, signal.SIGSTOP)
    guard.start()
    try:
        yield
    finally:
        guard.cancel()
        resume()


def kill9(pid: int, timeout_s: float = 10.0) -> None:
    """SIGKILL the process group of ``pid`` and wait (bounded) until ``pid`` is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    raise TimeoutError(f"process {pid} still alive {timeout_s} s after SIGKILL")


def run_audit(day: date, settings: Any, prefix: str, case: str) -> Any:
    """Audit ``day`` for one case's requests (``prefix``), print its counts, return the report."""
    from qp_assets.audit import audit_day, format_report

    report = audit_day(day, settings, request_id_prefix=prefix)
    print(f"\n[{case}] {format_report(report)}")
    return report


LOST = {"missing", "published_not_landed", "landed_not_in_iceberg", "undecodable_not_in_dlq"}
DUPLICATED = {"duplicated_rows", "duplicated_dlq", "row_and_dlq"}


def lost_and_duplicated(report: Any) -> tuple[int, int]:
    """(requests lost, requests duplicated) of an audit report. Duplicated also counts a result landed in
    more than one object (the sink wrote a record twice), even when the build kept one row."""
    lost = sum(1 for v in report.violations if v["kind"] in LOST)
    dup_ids = {v["request_id"] for v in report.violations if v["kind"] in DUPLICATED}
    dup_ids |= {t.label for t in report.requests if any(len(keys) > 1 for keys in t.landed.values())}
    return lost, len(dup_ids)


@dataclass
class Expected:
    """What one fault case must end as (checked by test_zz_audit after the day's feature build)."""

    case: str
    prefix: str
    day: date
    counts: dict[str, int]
    recovery_s: float | None
    notes: str = ""
    settings: Any = field(default=None, repr=False)
    built: bool = False  # the case built its day itself (test_zz_audit does not rebuild it)


LEDGER: list[Expected] = []


def expect(case: str, prefix: str, day: date, counts: dict[str, int], recovery_s: float | None,
           settings: Any, notes: str = "", built: bool = False) -> None:  # fmt: skip
    LEDGER.append(Expected(case, prefix, day, counts, recovery_s, notes, settings, built))


def catalog_locations(settings: Any, namespace: str = "quantum_features") -> dict[str, str]:
    """table -> current metadata location, read straight from the SQLite catalog (read-only, no lock
    held between calls). A table's location changes exactly when a commit to it lands."""
    import sqlite3

    uri = settings.iceberg_catalog_uri
    if not uri.startswith("sqlite:///"):
        raise ValueError(f"iceberg_catalog_uri: the commit watcher reads a SQLite catalog, got {uri!r}")
    with contextlib.closing(
        sqlite3.connect(f"file:{uri[len('sqlite:///') :]}?mode=ro", uri=True, timeout=5)
    ) as conn:
        rows = conn.execute(
            "SELECT table_name, metadata_location FROM iceberg_tables WHERE table_namespace = ?", (namespace,)
        ).fetchall()
    return dict(rows)


def on_commits(settings: Any, n: int, action: Any, timeout_s: float = 120.0) -> threading.Thread:
    """Start a thread that runs ``action()`` as soon as ``n`` tables have a new commit since this call
    (polls the catalog every 50 ms; gives up silently after ``timeout_s``). ``thread.fired`` tells."""
    before = catalog_locations(settings)

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            now = catalog_locations(settings)
            changed = sorted(t for t, loc in now.items() if before.get(t) != loc)
            if len(changed) >= n:
                thread.changed = changed  # type: ignore[attr-defined]
                thread.fired = True  # type: ignore[attr-defined]
                action()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, name="commit-watch", daemon=True)
    thread.fired = False  # type: ignore[attr-defined]
    thread.changed = []  # type: ignore[attr-defined]
    thread.start()
    return thread


@contextlib.contextmanager
def own_spark_session(settings: Any) -> Iterator[Any]:
    """A fresh Spark Connect session whose Iceberg catalog uses ``settings`` (e.g. an S3 endpoint behind a
    :class:`FaultProxy`): the process's default session is stopped before (a catalog, once loaded in a
    session, keeps its endpoint) and this one after (later builds get a session of their own settings)."""
    from pyspark.sql.connect.session import SparkSession as RemoteSession

    from qp_assets.features.spark import remote_session

    def stop_default() -> None:
        session = RemoteSession._get_default_session()
        if session is not None:
            with contextlib.suppress(Exception):
                session.stop()

    stop_default()
    spark = remote_session(settings)
    try:
        yield spark
    finally:
        with contextlib.suppress(Exception):
            spark.stop()
        stop_default()


def rows_of_prefix(settings: Any, day: date, prefix: str) -> dict[str, int]:
    """table -> rows of ``day`` whose run_id starts with ``prefix``, for the nine data tables (PyIceberg)."""
    from qp_assets.features.catalog import read_rows
    from qp_assets.features.transforms import DATA_TABLES

    out = {}
    for name in DATA_TABLES:
        run_ids = read_rows(name, day=day, settings=settings).column("run_id").to_pylist()
        out[name] = sum(1 for r in run_ids if r and r.startswith(prefix))
    return out


#: Rows one synthetic result (``golden.make_result`` defaults: 5 iterations, 3 parameters, 9 terms) gives
#: in each data table.
ROWS_PER_RESULT = {"molecules": 1, "ansatz_info": 1, "performance_metrics": 1, "vqe_results": 1,
                   "initial_parameters": 3, "optimal_parameters": 3, "vqe_iterations": 5,
                   "iteration_parameters": 15, "hamiltonian_terms": 9}  # fmt: skip


@contextlib.contextmanager
def smtp_sink() -> Iterator[tuple[list[tuple[str, list[str], str]], int]]:
    """A local SMTP server (aiosmtpd) on an ephemeral loopback port: yields (inbox, port); each mail is
    (sender, recipients, raw message)."""
    from aiosmtpd.controller import Controller

    inbox: list[tuple[str, list[str], str]] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook name
            inbox.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content.decode()))
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()
