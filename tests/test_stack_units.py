"""Unit tests of the stack launcher's own logic (isolated runtime dir, throwaway processes, free ports).

None of these touch the shared stack: each test points QP_HOME at a temporary directory and uses
ports nobody else listens on.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from qp_assets.stack import StackError, UnknownServiceError, down, ensure_up, launcher, process
from qp_assets.stack.services import SERVICES, Endpoint, Service, StackContext, java_executable
from qp_assets.stack.services.base import http_ok

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QP_HOME", str(tmp_path / "qp"))
    return tmp_path / "qp"


def _fake_service(name: str, cmd: list[str], port: int, start_timeout: float = 10) -> Service:
    return Service(
        name=name,
        endpoint=lambda c: Endpoint("127.0.0.1", port),
        ports=lambda c: [port],
        fetch=lambda c: None,
        fetched=lambda c: True,
        command=lambda c: cmd,
        probe=lambda c: http_ok(f"http://127.0.0.1:{port}/"),
        start_timeout=start_timeout,
        stop_grace=5,
    )


@pytest.fixture
def fake_service(monkeypatch: pytest.MonkeyPatch, isolated_home: Path):
    """Register a throwaway service named 'fake' (only it is known to the launcher)."""

    def install(cmd: list[str], port: int, start_timeout: float = 10) -> Service:
        svc = _fake_service("fake", cmd, port, start_timeout)
        monkeypatch.setitem(SERVICES, "fake", svc)
        monkeypatch.setattr(launcher, "SERVICE_ORDER", ["fake"])
        return svc

    return install


def test_unknown_service_name_is_rejected() -> None:
    with pytest.raises(UnknownServiceError, match="unknown service 'kafak'"):
        ensure_up(["kafak"])


def _run_stack_cli(argv: list[str]) -> int:
    """Parse and run ``qp stack ...`` in-process (the dispatcher of other areas is not needed here)."""
    import argparse

    from qp_assets.cli_errors import run_handler
    from qp_assets.stack import cli

    parser = argparse.ArgumentParser(prog="qp")
    cli.register(parser.add_subparsers(dest="command"))
    return run_handler(parser.parse_args(argv))


def test_cli_unknown_service_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run_stack_cli(["stack", "up", "--only", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0
    assert "unknown service 'nosuch'" in err


def test_cli_port_in_use_names_port_and_service(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setenv("PUSHGATEWAY_URL", f"127.0.0.1:{port}")
        assert _run_stack_cli(["stack", "up", "--only", "pushgateway"]) == 1
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0, err
    assert f"port {port} needed by pushgateway is already in use" in err


def test_qp_entry_point_dispatches_stack() -> None:
    """The real console entry point reaches the stack's handlers (one subprocess)."""
    proc = subprocess.run(
        [sys.executable, "-m", "qp_assets.cli", "stack", "logs", "nosuch"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "unknown service 'nosuch'" in proc.stderr


def test_service_dying_during_start_names_it_and_its_log(fake_service, isolated_home: Path) -> None:
    fake_service(["sh", "-c", "echo boom; exit 3"], _free_port())
    with pytest.raises(StackError) as info:
        ensure_up(["fake"])
    message = str(info.value)
    assert "fake exited with code 3 during start" in message
    log = isolated_home / "logs" / "fake.log"
    assert str(log) in message
    assert "boom" in log.read_text()


def test_up_is_idempotent_restarts_dead_and_down_kills_group(fake_service, isolated_home: Path) -> None:
    port = _free_port()
    # the shell spawns a child http server: stopping must take the whole process group
    fake_service(["sh", "-c", f"{sys.executable} -m http.server {port} --bind 127.0.0.1"], port)
    ensure_up(["fake"])
    pidfile = isolated_home / "pids" / "fake.pid"
    first = process.live_pid(pidfile)
    assert first is not None and len(process.group_members(first)) == 2
    ensure_up(["fake"])
    assert process.live_pid(pidfile) == first  # running service left alone

    os.killpg(first, 9)  # simulate a crash
    process.stop_group(first, 1)
    ensure_up(["fake"])
    second = process.live_pid(pidfile)
    assert second is not None and second != first  # dead service restarted

    assert down(["fake"]) == ["fake"]
    assert process.group_members(second) == []
    assert not pidfile.exists()
    assert not process.port_open("127.0.0.1", port)


def test_java_version_requirement_error_names_service() -> None:
    with pytest.raises(StackError, match=r"java >= 99 not found \(needed by registry\)"):
        java_executable(99, "registry")


def test_ports_follow_client_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    from qp_assets.settings import Settings

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    monkeypatch.setenv("QP_KAFKA_CONTROLLER_PORT", "19093")
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", "http://registry.example.com:8081/apis/ccompat/v7")
    monkeypatch.setenv("QP_SEAWEEDFS_PORT_OFFSET", "100")
    ctx = StackContext(Settings.from_env())
    assert SERVICES["kafka"].ports(ctx) == [19092, 19093]
    assert not SERVICES["registry"].endpoint(ctx).local  # external: never started, only probed
    assert 9433 in SERVICES["seaweedfs"].ports(ctx)
    monkeypatch.setenv("QP_KAFKA_CONTROLLER_PORT", "not-a-port")
    with pytest.raises(StackError, match="QP_KAFKA_CONTROLLER_PORT='not-a-port'"):
        SERVICES["kafka"].ports(ctx)


def test_port_offset_moves_every_default_port(monkeypatch: pytest.MonkeyPatch) -> None:
    from qp_assets.settings import Settings

    monkeypatch.setenv("QP_PORT_OFFSET", "20000")
    monkeypatch.setenv("KAFKA_CONNECT_URL", "http://127.0.0.1:8183")  # an explicit endpoint still wins
    settings = Settings.from_env()
    ctx = StackContext(settings)
    assert settings.kafka_bootstrap_servers == "127.0.0.1:29092"
    assert settings.schema_registry_url == "http://127.0.0.1:28081/apis/ccompat/v7"
    assert SERVICES["kafka"].ports(ctx) == [29092, 29093]
    assert SERVICES["registry"].ports(ctx) == [28081, 28085]
    assert SERVICES["connect"].ports(ctx) == [8183]
    assert SERVICES["seaweedfs"].ports(ctx) == [
        *(28333, 29333, 29340, 28888, 27333, 43646, 28181, 29101),  # S3 and the other listeners
        *(39333, 39340, 38888, 53646),  # gRPC of master, volume, filer, admin
    ]
    assert SERVICES["pushgateway"].ports(ctx) == [29091]
    assert SERVICES["prometheus"].ports(ctx) == [29090]
    monkeypatch.setenv("QP_PORT_OFFSET", "lots")
    with pytest.raises(ValueError, match="QP_PORT_OFFSET='lots'"):
        Settings.from_env()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_resolve_pom_caches_and_reports_failed_download(tmp_path: Path, monkeypatch) -> None:
    from qp_assets.stack import maven

    pom = tmp_path / "pom.xml"
    pom.write_text(
        (ROOT / "infra" / "kafka" / "pom.xml")
        .read_text()
        .replace("qp-kafka-broker", "qp-test-cache")
        .split("<dependencies>")[0]
        + "<dependencies><dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>"
        "<version>2.0.17</version></dependency></dependencies></project>\n"
    )
    dest = tmp_path / "lib"
    assert maven.resolve_pom(pom, dest) == dest.resolve()
    assert [p.name for p in dest.glob("*.jar")] == ["slf4j-api-2.0.17.jar"]

    def no_maven(*args, **kwargs):
        raise AssertionError("maven must not run for a cached pom")

    monkeypatch.setattr(maven.subprocess, "call", no_maven)
    maven.resolve_pom(pom, dest)  # cached: no Maven run
    monkeypatch.undo()

    bad = tmp_path / "bad" / "pom.xml"
    bad.parent.mkdir()
    bad.write_text(pom.read_text().replace("2.0.17", "0.0.0-does-not-exist"))
    with pytest.raises(StackError, match=r"maven failed resolving .*bad/pom.xml .*; see .*maven.log"):
        maven.resolve_pom(bad, tmp_path / "badlib")
    assert not (tmp_path / "badlib").exists()


def test_connect_hooks_are_called_and_errors_surface(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qp_assets.settings import Settings
    from qp_assets.stack.services import connect as services
    from qp_assets.streaming import connect

    calls: list[object] = []
    monkeypatch.setattr(connect, "install_plugins", lambda plugin_dir: calls.append(plugin_dir))
    monkeypatch.setattr(
        connect, "ensure_connectors", lambda settings: calls.append(settings.kafka_connect_url)
    )
    ctx = StackContext(Settings.from_env())
    services._connect_before_start(ctx)
    services._connect_after_ready(ctx)
    assert calls == [isolated_home.resolve() / "connect-plugins", ctx.settings.kafka_connect_url]

    def broken(settings: Settings) -> None:
        raise RuntimeError("connector s3-sink rejected: missing topics.regex")

    monkeypatch.setattr(connect, "ensure_connectors", broken)
    with pytest.raises(StackError, match="connector setup failed: RuntimeError: connector s3-sink rejected"):
        services._connect_after_ready(ctx)

    def unwritable(plugin_dir: Path) -> None:
        raise PermissionError(f"{plugin_dir}: read-only")

    monkeypatch.setattr(connect, "install_plugins", unwritable)
    with pytest.raises(StackError, match="connect plugin install failed: PermissionError: .*connect-plugins"):
        services._connect_before_start(ctx)


def test_maven_services_fetch_their_pom_into_lib_and_debian_ones_name_the_package(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qp_assets.settings import Settings
    from qp_assets.stack.services import SERVICES, base

    resolved: list[tuple[Path, Path, str, Path]] = []
    monkeypatch.setattr(
        base, "resolve_pom", lambda pom, dest, goal, log_file: resolved.append((pom, dest, goal, log_file))
    )
    ctx = StackContext(Settings.from_env())
    for name in ("kafka", "registry", "connect"):
        assert SERVICES[name].fetched(ctx) is False  # an empty runtime dir holds no resolution
        SERVICES[name].fetch(ctx)
    lib, logs = isolated_home.resolve() / "lib", isolated_home.resolve() / "logs"
    assert [(p.relative_to(base.INFRA).as_posix(), d, g, f) for p, d, g, f in resolved] == [
        ("kafka/pom.xml", lib / "kafka", "copy-dependencies", logs / "maven-kafka.log"),
        ("registry/pom.xml", lib / "registry", "unpack-dependencies", logs / "maven-registry.log"),
        ("connect/worker/pom.xml", lib / "connect", "copy-dependencies", logs / "maven-connect.log"),
    ]
    monkeypatch.setattr(base, "debian_binary", lambda name: None)
    with pytest.raises(StackError, match=r"^prometheus-pushgateway not installed; run 'qp stack fetch'"):
        SERVICES["pushgateway"].command(ctx)
    assert not (
        isolated_home / "data" / "pushgateway"
    ).exists()  # nothing created for a service that cannot run
    assert ctx.data_dir("kafka", "logs") == isolated_home.resolve() / "data" / "kafka" / "logs"
    assert ctx.data_dir("kafka", "logs").is_dir()


def test_seaweedfs_start_waits_while_a_port_is_held_by_a_closing_connection(monkeypatch, tmp_path):
    """``weed mini`` refuses a port any socket still uses (seen: a client's TIME_WAIT on its admin port at
    QP_PORT_OFFSET=20000 failed ``qp stack up``): the launcher waits until the ports are free, and fails
    naming them when they stay taken."""
    import socket

    from qp_assets.stack import launcher, process
    from qp_assets.stack.errors import StackError
    from qp_assets.stack.services.base import Service

    held = socket.socket()
    held.bind(("127.0.0.1", 0))  # bound, not listening: like a closing connection's port
    port = held.getsockname()[1]
    svc = Service(name="strict", command=lambda c: [], probe=lambda c: True, ports=lambda c: [port],
                  exclusive_ports=True)  # fmt: skip
    assert not process.port_bindable("127.0.0.1", port)
    monkeypatch.setattr(launcher, "PORT_RELEASE_WAIT_S", 1.5)
    with pytest.raises(StackError, match=rf"ports \[{port}\] needed by strict still in use after 2s"):
        launcher._check_ports(None, svc)
    import threading

    threading.Timer(0.5, held.close).start()
    launcher._check_ports(None, svc)  # returns once the port is released
    assert process.port_bindable("127.0.0.1", port)


def _time_wait_on(closer: str) -> tuple[int, int]:
    """A loopback connection closed first by ``closer`` ("client" or "server"), which so enters TIME_WAIT;
    returns (the listener's port, the client's port)."""
    import socket
    import time

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go's and the JVM's listeners do
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    client = socket.socket()
    client.connect(srv.getsockname())
    accepted, _ = srv.accept()
    ports = srv.getsockname()[1], client.getsockname()[1]
    first, second = (accepted, client) if closer == "server" else (client, accepted)
    first.close()
    time.sleep(0.1)
    second.close()
    srv.close()
    time.sleep(0.1)
    return ports


def test_port_bindable_ignores_a_stopped_servers_time_wait_but_not_a_clients():
    """A restarted service must not wait 60 s for the TIME_WAIT its own connections left on its port (the
    restart test waited for it), while a client's TIME_WAIT on a service port does block a listener (seen
    with weed mini's admin port) and must still be waited for."""
    from qp_assets.stack import process

    server_port, _ = _time_wait_on("server")
    assert process.port_bindable("127.0.0.1", server_port)
    _, client_port = _time_wait_on("client")
    assert not process.port_bindable("127.0.0.1", client_port)


def _tiny_listener(port: int):
    """A Service whose process (plain Python) listens on ``port`` for 60 s, or exits at once if it cannot."""
    import sys

    from qp_assets.stack import process
    from qp_assets.stack.services.base import Endpoint, Service

    listener = (
        f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(60)"
    )
    return Service(name="tiny", command=lambda c: [sys.executable, "-c", listener],
                   probe=lambda c: process.port_open("127.0.0.1", port), ports=lambda c: [port],
                   endpoint=lambda c: Endpoint("127.0.0.1", port))  # fmt: skip


def test_a_service_that_exits_on_a_taken_port_is_started_again_once_the_port_is_free(monkeypatch, tmp_path):
    """A service (here a tiny Python listener) exits at start because a client connection still holds its
    port (Linux's ephemeral range at large QP_PORT_OFFSET values): the launcher waits for the port and
    starts it once more, instead of failing ``qp stack up``."""
    import socket
    import threading

    from qp_assets.settings import Settings
    from qp_assets.stack import launcher, process
    from qp_assets.stack.services.base import StackContext

    monkeypatch.setenv("QP_HOME", str(tmp_path))
    held = socket.socket()
    held.bind(("127.0.0.1", 0))  # bound, not listening: neither a foreign listener nor free
    port = held.getsockname()[1]
    svc = _tiny_listener(port)
    ctx = StackContext(Settings.from_env())
    threading.Timer(2.0, held.close).start()  # after the first attempt has exited
    launcher._start(ctx, svc)
    try:
        assert process.port_open("127.0.0.1", port)
        assert ctx.log_file("tiny").read_text().count("Address already in use") == 1  # the first attempt
    finally:
        process.stop_group(process.live_pid(ctx.pid_file("tiny")), 5)


def test_spark_connect_runs_niced_so_feature_builds_yield_to_vqe_runs(monkeypatch):
    from qp_assets.settings import Settings
    from qp_assets.stack.services import SERVICES
    from qp_assets.stack.services.base import StackContext

    ctx = StackContext(Settings.from_env())
    monkeypatch.delenv("QP_SPARK_NICE", raising=False)
    assert SERVICES["spark-connect"].command(ctx)[:3] == ["nice", "-n", "10"]
    monkeypatch.setenv("QP_SPARK_NICE", "0")
    assert SERVICES["spark-connect"].command(ctx)[1:] == ["-m", "qp_assets.features.spark"]


def test_ports_of_services_not_started_yet_are_reserved_until_each_starts(monkeypatch, tmp_path):
    """``ensure_up`` binds a placeholder on each port of the services it will start, so no client of an
    earlier service gets one as its ephemeral source port; a service's placeholders are closed right before
    it starts, and it can listen on its port."""
    import socket

    from qp_assets.settings import Settings
    from qp_assets.stack import launcher, process
    from qp_assets.stack.services.base import StackContext

    monkeypatch.setenv("QP_HOME", str(tmp_path))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    svc = _tiny_listener(port)
    ctx = StackContext(Settings.from_env())
    with launcher._reserved_ports(ctx, [svc]) as reserved:
        assert list(reserved) == [port] and not process.port_bindable("127.0.0.1", port)
        try:
            assert launcher._ensure_one(ctx, svc, reserved) == "started"
            assert reserved == {} and process.port_open("127.0.0.1", port)
        finally:
            process.stop_group(process.live_pid(ctx.pid_file("tiny")), 5)


def test_spawned_service_can_be_stopped_even_when_the_parent_ignores_sigterm(tmp_path):
    """A SIGTERM ignored by the parent (as in CI's pytest process) is not passed on to a service: the JVMs
    would keep it ignored, and every ``qp stack down`` waited their whole grace (88.8 s instead of ~6 s)."""
    import signal
    import sys
    import time

    from qp_assets.stack import process

    child = "import time; print(open('/proc/self/status').read(), flush=True); time.sleep(30)"
    log = tmp_path / "child.log"
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        proc = process.spawn([sys.executable, "-c", child], log, {}, tmp_path)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # the parent's own disposition is kept
    finally:
        signal.signal(signal.SIGTERM, previous)
    deadline = time.monotonic() + 20
    while "SigIgn" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    ignored = int(
        next(line for line in log.read_text().splitlines() if line.startswith("SigIgn")).split()[1], 16
    )
    assert not ignored & (1 << (signal.SIGTERM - 1)), hex(ignored)
    started = time.monotonic()
    assert process.stop_group(proc.pid, 10) is False  # ended by SIGTERM, not SIGKILL after the grace
    assert time.monotonic() - started < 5


def test_low_disk_warning_names_the_path_and_the_free_space(tmp_path: Path) -> None:
    """Below the threshold, one line naming the runtime directory and the GB free; above it, nothing."""
    runtime = tmp_path / "not-created-yet" / "qp"
    free_gb = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize / 2**30
    warning = launcher.low_disk_warning(runtime, threshold_bytes=2**60)
    assert warning is not None and str(runtime) in warning
    reported = float(warning.split("only ")[1].split(" GB free")[0])
    assert abs(reported - free_gb) < 0.5  # other processes may write meanwhile
    assert launcher.low_disk_warning(runtime, threshold_bytes=1) is None
