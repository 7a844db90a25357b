"""Start, stop and inspect the local stack (plain processes, PID files, logs under the runtime dir).

Contracts:
- ``ensure_up(services)`` is idempotent: a healthy service of ours is left alone, a dead one is restarted,
  a missing one is started; dependencies first, in SERVICE_ORDER. Returns the Settings clients should use.
- A port held by a process that is not ours raises StackError naming port and service (no waiting).
- A service exiting during start raises StackError naming it and its log file.
- ``down()`` stops in reverse order: SIGTERM to the process group, SIGKILL after the service's grace.
- Concurrent callers (several pytest sessions, CLI) serialize on ``<runtime>/stack.lock``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from qp_assets.settings import Settings
from qp_assets.stack import process
from qp_assets.stack.errors import StackError, UnknownServiceError
from qp_assets.stack.services import SERVICE_ORDER, SERVICES, Service, StackContext

log = logging.getLogger(__name__)


def validate_services(names: Iterable[str] | None) -> list[str]:
    """Requested names in start order; raises UnknownServiceError naming the bad one."""
    if names is None:
        return list(SERVICE_ORDER)
    wanted = [n.strip() for n in names if n and n.strip()]
    for name in wanted:
        if name not in SERVICES:
            raise UnknownServiceError(f"unknown service {name!r}; known services: {', '.join(SERVICE_ORDER)}")
    return [n for n in SERVICE_ORDER if n in wanted]


def with_dependencies(names: list[str]) -> list[str]:
    """``names`` plus their transitive dependencies, in start order."""
    needed: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        stack.extend(SERVICES[name].depends_on)
    return [n for n in SERVICE_ORDER if n in needed]


@contextmanager
def stack_lock(ctx: StackContext) -> Iterator[None]:
    ctx.root.mkdir(parents=True, exist_ok=True)
    with open(ctx.root / "stack.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class ServiceStatus:
    name: str
    endpoint: str
    pid: int | None
    state: str  # healthy | unhealthy | stopped | external-healthy | external-down
    rss_bytes: int
    log_file: Path


def _foreign_port(ctx: StackContext, svc: Service) -> int | None:
    """First of the service's ports on which something (not ours) already listens."""
    for port in svc.ports(ctx):
        if process.port_open("127.0.0.1", port):
            return port
    return None


def _fetch(ctx: StackContext, svc: Service) -> None:
    if not svc.fetched(ctx):
        log.info("fetching %s (first time: downloads from Maven Central / apt)", svc.name)
    svc.fetch(ctx)


def _wait_ready(ctx: StackContext, svc: Service, proc, started: float, pid: int | None = None) -> None:
    """Poll the probe until ready; ``proc`` (our child) or ``pid`` (an earlier start) must stay alive."""
    deadline = started + svc.start_timeout
    logfile = ctx.log_file(svc.name)
    while True:
        rc = proc.poll() if proc is not None else None
        if rc is not None:
            raise _ExitedDuringStart(f"{svc.name} exited with code {rc} during start; see {logfile}")
        if pid is not None and process.live_pid(ctx.pid_file(svc.name)) != pid:
            raise StackError(f"{svc.name} (pid {pid}) exited; see {logfile}")
        if svc.probe(ctx):
            return
        if time.monotonic() > deadline:
            raise StackError(
                f"{svc.name} not ready after {svc.start_timeout:.0f}s (port {svc.endpoint(ctx).port}); see {logfile}"
            )
        time.sleep(0.5)


def _wait_ports_released(ctx: StackContext, svc: Service, timeout_s: float = 10.0) -> None:
    """After a stop, wait until the service's ports no longer accept connections.

    A killed process can keep accepting for a moment after it left the process table (seen with
    SeaweedFS after SIGKILL); an immediate ``up`` would then take the port for a foreign one.
    """
    deadline = time.monotonic() + timeout_s
    while (port := _foreign_port(ctx, svc)) is not None:
        if time.monotonic() > deadline:
            log.warning(
                "%s stopped but port %d still accepts connections after %.0fs", svc.name, port, timeout_s
            )
            return
        time.sleep(0.1)


#: Longest wait for a port held by a closing connection (Linux keeps TIME_WAIT for 60 s).
PORT_RELEASE_WAIT_S = 75.0


def _check_ports(ctx: StackContext, svc: Service) -> None:
    """Fail naming the holder when another process listens on one of the service's ports; for a service with
    ``exclusive_ports``, first wait (up to ``PORT_RELEASE_WAIT_S``) while a port is only held by a closing
    connection or a client's ephemeral port (at large ``QP_PORT_OFFSET`` values its ports fall in Linux's
    ephemeral range, 32768-60999)."""
    port = _foreign_port(ctx, svc)
    if port is not None:
        holder = process.port_holder(port)
        raise StackError(
            f"port {port} needed by {svc.name} is already in use by another process"
            f"{f' ({holder})' if holder else ''} (not started by qp stack)"
        )
    if svc.exclusive_ports:
        _wait_bindable(ctx, svc)


def _busy_ports(ctx: StackContext, svc: Service) -> list[int]:
    return [p for p in svc.ports(ctx) if not process.port_bindable("127.0.0.1", p)]


def _wait_bindable(ctx: StackContext, svc: Service) -> None:
    """Wait (up to ``PORT_RELEASE_WAIT_S``) until no socket uses the service's ports, or fail naming them."""
    deadline = time.monotonic() + PORT_RELEASE_WAIT_S
    while busy := _busy_ports(ctx, svc):
        if time.monotonic() > deadline:
            raise StackError(
                f"ports {busy} needed by {svc.name} still in use after {PORT_RELEASE_WAIT_S:.0f}s"
            )
        log.info("%s: port(s) %s held by closing connections; waiting", svc.name, busy)
        time.sleep(1.0)


def _start(ctx: StackContext, svc: Service) -> None:
    """Start the service and wait until it is ready. A service that exits during start while one of its
    ports is still used by another socket (at large ``QP_PORT_OFFSET`` values its ports fall in Linux's
    ephemeral range, 32768-60999, where client connections take ports: seen with Spark Connect's 38002 at
    offset 23000) is started once more after the port is free."""
    _check_ports(ctx, svc)
    try:
        _spawn_ready(ctx, svc)
    except _ExitedDuringStart:
        if not _busy_ports(ctx, svc):
            raise
        log.warning("%s exited during start: port(s) %s in use; retrying once they are free", svc.name,
                    _busy_ports(ctx, svc))  # fmt: skip
        _wait_bindable(ctx, svc)
        _spawn_ready(ctx, svc)


class _ExitedDuringStart(StackError):
    """The service's process exited before it was ready."""


def _spawn_ready(ctx: StackContext, svc: Service) -> None:
    if svc.before_start is not None:
        svc.before_start(ctx)
    cmd = svc.command(ctx)
    env = dict(os.environ)
    env.update(svc.env(ctx))
    logfile = ctx.log_file(svc.name)
    workdir = ctx.data_dir(svc.name)
    started = time.monotonic()
    try:
        proc = process.spawn(cmd, logfile, env, workdir)
    except OSError as exc:
        raise StackError(f"{svc.name} could not be launched ({exc}); see {logfile}") from exc
    process.write_pidfile(ctx.pid_file(svc.name), proc.pid)
    try:
        _wait_ready(ctx, svc, proc, started)
    except StackError:
        process.stop_group(proc.pid, 5)
        ctx.pid_file(svc.name).unlink(missing_ok=True)
        raise
    log.info("%s ready on port %d in %.1fs", svc.name, svc.endpoint(ctx).port, time.monotonic() - started)


def _after_ready(ctx: StackContext, svc: Service) -> None:
    if svc.after_ready is None:
        return
    try:
        svc.after_ready(ctx)
    except StackError:
        raise
    except Exception as exc:
        raise StackError(
            f"{svc.name} post-start setup failed: {type(exc).__name__}: {exc}; see {ctx.log_file(svc.name)}"
        ) from exc


@contextmanager
def _reserved_ports(ctx: StackContext, services: Iterable[Service]) -> Iterator[dict[int, socket.socket]]:
    """Bind a placeholder socket (no listen) on each free port of the given local services that are not
    running, until each is released by :func:`_ensure_one` right before its service starts (the rest when
    the block ends).

    At large ``QP_PORT_OFFSET`` values the services' ports lie in Linux's ephemeral range (32768-60999),
    where the kernel picks source ports for outgoing connections: a client of a service started first
    (Connect's Kafka consumers, the Spark warm-up) could take a later service's port, which then cannot
    listen (seen: Prometheus on 35090 at offset 26000, Spark Connect on 38002 at offset 23000). The kernel
    never picks a bound port as a source port."""
    held: dict[int, socket.socket] = {}
    try:
        for svc in services:
            if not svc.endpoint(ctx).local or process.live_pid(ctx.pid_file(svc.name)) is not None:
                continue
            for port in svc.ports(ctx):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:  # in use: the service's own checks report it
                    sock.close()
                    continue
                held[port] = sock
        yield held
    finally:
        for sock in held.values():
            sock.close()


def _ensure_one(ctx: StackContext, svc: Service, reserved: dict[int, socket.socket] | None = None) -> str:
    """Bring one service to healthy; returns what was done: external|running|started|restarted.
    ``reserved``: placeholder sockets of :func:`_reserved_ports`; the service's own are closed first."""
    for port in svc.ports(ctx) if reserved else ():
        if port in reserved:
            reserved.pop(port).close()
    endpoint = svc.endpoint(ctx)
    if not endpoint.local:
        if not svc.probe(ctx):
            raise StackError(
                f"external {svc.name} at {endpoint.host}:{endpoint.port} does not answer its probe"
            )
        return "external"
    pid = process.live_pid(ctx.pid_file(svc.name))
    if pid is not None:
        if svc.probe(ctx):
            _after_ready(ctx, svc)
            return "running"
        # ours and alive but not answering: maybe still starting; give it its start window, then restart
        try:
            _wait_ready(ctx, svc, None, time.monotonic(), pid=pid)
            _after_ready(ctx, svc)
            return "running"
        except StackError:
            log.warning("%s (pid %d) alive but not ready; restarting", svc.name, pid)
            process.stop_group(pid, svc.stop_grace)
        action = "restarted"
    else:
        action = "started" if not ctx.pid_file(svc.name).exists() else "restarted"
        if action == "restarted":  # ours died (kill -9, crash): its sockets may linger for a moment
            _wait_ports_released(ctx, svc)
    ctx.pid_file(svc.name).unlink(missing_ok=True)
    _check_ports(ctx, svc)
    _fetch(ctx, svc)
    _start(ctx, svc)
    _after_ready(ctx, svc)
    return action


def ensure_up(services: list[str] | None = None, settings: Settings | None = None) -> Settings:
    """Make the requested services (default: all) and their dependencies healthy; return Settings.

    Idempotent and safe to call from several processes at once. Raises StackError (one line naming
    the failing service and its log) or UnknownServiceError.
    """
    settings = settings or Settings.from_env()
    ctx = StackContext(settings)
    names = with_dependencies(validate_services(services))
    with stack_lock(ctx), _reserved_ports(ctx, [SERVICES[n] for n in names]) as reserved:
        for name in names:
            action = _ensure_one(ctx, SERVICES[name], reserved)
            log.debug("%s: %s", name, action)
    return settings


def fetch(services: list[str] | None = None, settings: Settings | None = None) -> None:
    """Download/resolve everything the services need (jars, registry distribution, Debian packages)."""
    ctx = StackContext(settings or Settings.from_env())
    for name in with_dependencies(validate_services(services)):
        _fetch(ctx, SERVICES[name])


def down(services: list[str] | None = None, settings: Settings | None = None) -> list[str]:
    """Stop our services (default: all) in reverse start order; returns the names that were stopped."""
    ctx = StackContext(settings or Settings.from_env())
    names = validate_services(services)
    stopped = []
    with stack_lock(ctx):
        for name in reversed(names):
            svc = SERVICES[name]
            pidfile = ctx.pid_file(name)
            pid = process.live_pid(pidfile)
            if pid is not None:
                forced = process.stop_group(pid, svc.stop_grace)
                _wait_ports_released(ctx, svc)
                log.info("%s stopped%s", name, " (SIGKILL after grace)" if forced else "")
                stopped.append(name)
            pidfile.unlink(missing_ok=True)
    return stopped


def restart(services: list[str] | None = None, settings: Settings | None = None) -> Settings:
    """Stop then start the given services (e.g. ``["connect"]`` to load a rebuilt plugin); returns Settings."""
    settings = settings or Settings.from_env()
    down(services, settings)
    return ensure_up(services, settings)


def status(services: list[str] | None = None, settings: Settings | None = None) -> list[ServiceStatus]:
    """Current state of each service (no side effects)."""
    ctx = StackContext(settings or Settings.from_env())
    result = []
    for name in validate_services(services):
        svc = SERVICES[name]
        endpoint = svc.endpoint(ctx)
        if not endpoint.local:
            state = "external-healthy" if svc.probe(ctx) else "external-down"
            pid = None
        else:
            pid = process.live_pid(ctx.pid_file(name))
            if pid is None:
                state = "stopped"
            else:
                state = "healthy" if svc.probe(ctx) else "unhealthy"
        result.append(
            ServiceStatus(
                name=name,
                endpoint=f"{endpoint.host}:{endpoint.port}",
                pid=pid,
                state=state,
                rss_bytes=process.group_rss_bytes(pid) if pid else 0,
                log_file=ctx.log_file(name),
            )
        )
    return result


def our_process_groups(settings: Settings | None = None) -> dict[str, int]:
    """name -> live PID (= process group id) of every service we started."""
    ctx = StackContext(settings or Settings.from_env())
    groups = {}
    for name in SERVICE_ORDER:
        pid = process.live_pid(ctx.pid_file(name))
        if pid is not None:
            groups[name] = pid
    return groups


#: Free space below which ``qp stack up`` warns (bytes): the test suite's stack phase writes about 3 GB.
LOW_DISK_BYTES = 3 * 2**30


def low_disk_warning(path: Path, threshold_bytes: int = LOW_DISK_BYTES) -> str | None:
    """A one-line warning when the disk holding ``path`` (the runtime directory) has less than
    ``threshold_bytes`` free, else None. Kafka, SeaweedFS and Spark then fail in ways that do not say
    "disk": SeaweedFS sizes its volume count from the free space and answers a write it cannot place with
    a bare S3 ``InternalError``."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    stat = os.statvfs(probe)
    free = stat.f_bavail * stat.f_frsize
    if free >= threshold_bytes:
        return None
    return (
        f"warning: only {free / 2**30:.1f} GB free on the disk of {path} (under {threshold_bytes / 2**30:.0f} GB): "
        "Kafka, SeaweedFS and Spark need room; S3 writes may fail with InternalError"
    )


def free_port_offset(candidates: Iterable[int] = range(24500, 40001, 500)) -> int:
    """The first ``QP_PORT_OFFSET`` of ``candidates`` at which every port of a local stack is free.

    For a throw-away second stack (benchmarks, the fresh-state test). The default candidates are steps
    of 500, which never make two of our own stacks collide (see docs/stack.md). Raises StackError when
    none is free.
    """
    for offset in candidates:
        ctx = StackContext(Settings.from_env(local_offset=offset))
        if all(_foreign_port(ctx, SERVICES[name]) is None for name in SERVICE_ORDER):
            return offset
    raise StackError("no free port offset for a second stack among the candidates")
