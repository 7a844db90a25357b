"""Process bookkeeping for the stack: PID files, liveness, port checks, group stop.

A PID file holds ``<pid> <create_time>`` so a recycled PID is never mistaken for our service. Each
service runs in its own session (``start_new_session=True``), so its PID is also its process-group id
and stopping signals the whole group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psutil


def read_pidfile(pidfile: Path) -> tuple[int, float] | None:
    """Return ``(pid, create_time)`` from a PID file, or None if missing/garbled."""
    try:
        parts = pidfile.read_text().split()
        return int(parts[0]), float(parts[1])
    except (OSError, ValueError, IndexError):
        return None


def live_pid(pidfile: Path) -> int | None:
    """PID recorded in ``pidfile`` if that exact process (same create time) is still running."""
    record = read_pidfile(pidfile)
    if record is None:
        return None
    pid, created = record
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - created) > 1.0 or proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.Error:
        return None
    return pid


def write_pidfile(pidfile: Path, pid: int) -> None:
    created = psutil.Process(pid).create_time()
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(f"{pid} {created}\n")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_bindable(host: str, port: int) -> bool:
    """True if a listener could bind ``host:port`` now, the way our services' servers bind (Go's and the
    JVM's listeners set ``SO_REUSEADDR``): no listener, no client socket on that local port (a client's
    ephemeral port, even closing: a client's TIME_WAIT blocks a listener for up to 60 s on Linux) and no
    placeholder of :func:`qp_assets.stack.launcher._reserved_ports` holds it. The server-side TIME_WAIT
    that a stopped service's own connections leave behind does not count: it never blocks its restart."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


LOG_ROTATE_BYTES = 50 * 2**20


def rotate_log(log_file: Path, max_bytes: int = LOG_ROTATE_BYTES) -> None:
    """Move ``log_file`` to ``<name>.1`` (replacing an older one) when it exceeds ``max_bytes``."""
    try:
        if log_file.stat().st_size > max_bytes:
            log_file.replace(log_file.with_name(log_file.name + ".1"))
    except FileNotFoundError:
        pass


def port_holder(port: int) -> str | None:
    """``"pid N: name"`` of the process listening on TCP ``port``, if the OS lets us see it."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return f"pid {conn.pid}: {psutil.Process(conn.pid).name()}"
    except (psutil.Error, OSError):
        return None
    return None


@contextmanager
def _sigterm_default() -> Iterator[None]:
    """SIGTERM at its default disposition while a service is spawned, so the service can be stopped.

    An ignored SIGTERM is inherited across fork and exec, and the JVM services then keep it ignored
    (HotSpot's "nohup" rule for its shutdown signals): ``stop_group`` waited each one's whole grace and
    SIGKILLed it (Kafka then recovers unclean logs). Seen in CI: the pytest process ignores SIGTERM (set by
    a library, not found), so the stacks its tests start took 88.8 s to stop instead of about 6 s. Only the
    main thread may change a disposition; elsewhere the spawn keeps the inherited one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def spawn(cmd: Sequence[str], log_file: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """Start ``cmd`` in a new session, stdout+stderr appended to ``log_file`` (rotated above 50 MB), with
    SIGTERM at its default disposition (:func:`_sigterm_default`)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    rotate_log(log_file)
    with open(log_file, "ab") as log, _sigterm_default():
        log.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
        log.flush()
        return subprocess.Popen(
            list(cmd),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )


def group_members(pgid: int) -> list[psutil.Process]:
    """All live processes whose process group is ``pgid``."""
    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def stop_group(pid: int, grace_seconds: float) -> bool:
    """SIGTERM the process group led by ``pid``, SIGKILL after ``grace_seconds``; True if it was forced."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if not group_members(pid):
            return False
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    end = time.monotonic() + 5
    while group_members(pid) and time.monotonic() < end:
        time.sleep(0.1)
    return True


def group_rss_bytes(pid: int) -> int:
    """Resident memory (bytes) of the process group led by ``pid``."""
    total = 0
    for proc in group_members(pid):
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total
