"""What every service of the local stack shares: endpoints and ports (:class:`StackContext`), the
:class:`Service` record, JVM and Debian-package helpers, HTTP / TCP probes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from qp_assets.settings import PROJECT_ROOT, Settings
from qp_assets.stack.errors import StackError, stack_env

INFRA = PROJECT_ROOT / "infra"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# weed mini listeners besides S3 (gRPC ports are these + 10000).
SEAWEED_DEFAULT_PORTS = {
    "master.port": 9333,
    "volume.port": 9340,
    "filer.port": 8888,
    "webdav.port": 7333,
    "admin.port": 23646,
    "s3.port.iceberg": 8181,
    "s3.port.lance": 9101,
}


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @property
    def local(self) -> bool:
        return self.host in LOOPBACK


def _endpoint(value: str, default_port: int) -> Endpoint:
    """Parse ``host:port`` or a URL into an Endpoint (first server of a comma list)."""
    first = value.split(",")[0].strip()
    if "://" not in first:
        first = "tcp://" + first
    parsed = urlparse(first)
    return Endpoint(parsed.hostname or "127.0.0.1", parsed.port or default_port)


@dataclass
class StackContext:
    """Everything a service needs to render its config and command line."""

    settings: Settings

    @property
    def root(self) -> Path:
        return self.settings.runtime_dir

    @property
    def lib(self) -> Path:
        return self.root / "lib"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def conf(self) -> Path:
        return self.root / "conf"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    def log_file(self, service: str) -> Path:
        return self.logs / f"{service}.log"

    def pid_file(self, service: str) -> Path:
        return self.pids / f"{service}.pid"

    # endpoints -------------------------------------------------------------------------------
    @property
    def kafka(self) -> Endpoint:
        return _endpoint(self.settings.kafka_bootstrap_servers, 9092)

    @property
    def kafka_controller_port(self) -> int:
        return stack_env().kafka_controller_port or 9093 + self.settings.port_offset

    @property
    def registry(self) -> Endpoint:
        return _endpoint(self.settings.schema_registry_url, 8081)

    @property
    def registry_management_port(self) -> int:
        return stack_env().registry_management_port or 8085 + self.settings.port_offset

    @property
    def connect(self) -> Endpoint:
        return _endpoint(self.settings.kafka_connect_url, 8083)

    @property
    def s3(self) -> Endpoint:
        return _endpoint(self.settings.s3_endpoint_url, 8333)

    @property
    def seaweed_internal_ports(self) -> dict[str, int]:
        """weed mini's other listeners (flag -> port), shifted by ``QP_SEAWEEDFS_PORT_OFFSET`` (default ``QP_PORT_OFFSET``)."""
        offset = stack_env().seaweedfs_port_offset
        offset = self.settings.port_offset if offset is None else offset
        return {flag: port + offset for flag, port in SEAWEED_DEFAULT_PORTS.items()}

    @property
    def spark_connect(self) -> Endpoint:
        return _endpoint(
            (self.settings.spark_connect_url or "sc://127.0.0.1:15002").replace("sc://", "tcp://", 1), 15002
        )

    @property
    def pushgateway(self) -> Endpoint:
        return _endpoint(self.settings.pushgateway_url, 9091)

    @property
    def prometheus(self) -> Endpoint:
        return _endpoint(self.settings.prometheus_url, 9090)


def _java_major(java_home: Path) -> int | None:
    """Major version from ``<java_home>/release`` (JAVA_VERSION="17.0.15" -> 17)."""
    try:
        for line in (java_home / "release").read_text().splitlines():
            if line.startswith("JAVA_VERSION="):
                version = line.split("=", 1)[1].strip().strip('"')
                head = version.split(".")[0]
                return int(version.split(".")[1]) if head == "1" else int(head)
    except (OSError, ValueError, IndexError):
        return None
    return None


def java_executable(min_version: int = 17, service: str = "kafka") -> str:
    """A ``java`` binary of at least ``min_version``: $JAVA_HOME, then PATH, then /usr/lib/jvm/*.

    Raises StackError naming the service when none qualifies.
    """
    candidates: list[Path] = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent.parent)
    candidates.extend(sorted(Path("/usr/lib/jvm").glob("*"), reverse=True))
    for home in candidates:
        binary = home / "bin" / "java"
        major = _java_major(home)
        if binary.is_file() and major is not None and major >= min_version:
            return str(binary)
    raise StackError(
        f"java >= {min_version} not found (needed by {service}); install a JDK {min_version}+ or set JAVA_HOME"
    )


def http_ok(url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> bool:
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers or {}), timeout=timeout
        ) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class Service:
    """One service of the stack.

    ``fetch`` downloads/resolves what the service needs (idempotent, cached; default: nothing, or the
    ``debian_package`` through apt); ``command`` renders config files and returns the argv; ``probe`` is the
    readiness check; ``after_ready`` runs idempotent setup once the service answers (e.g. bucket creation).
    ``endpoint`` defaults to the :class:`StackContext` property of the service's name, ``ports`` (checked
    for foreign listeners before a start) to that endpoint's port. ``depends_on`` services start first.
    """

    name: str
    command: Callable[[StackContext], list[str]]
    probe: Callable[[StackContext], bool]
    endpoint: Callable[[StackContext], Endpoint] | None = None
    ports: Callable[[StackContext], list[int]] | None = None
    fetch: Callable[[StackContext], None] | None = None
    fetched: Callable[[StackContext], bool] | None = None
    debian_package: str | None = None
    after_ready: Callable[[StackContext], None] | None = None
    before_start: Callable[[StackContext], None] | None = None
    env: Callable[[StackContext], dict[str, str]] = field(default=lambda ctx: {})
    depends_on: tuple[str, ...] = ()
    start_timeout: float = 90.0
    stop_grace: float = 20.0

    def __post_init__(self) -> None:
        attribute = self.name.replace("-", "_")
        self.endpoint = self.endpoint or (lambda ctx: getattr(ctx, attribute))
        self.ports = self.ports or (lambda ctx: [self.endpoint(ctx).port])
        package = self.debian_package
        self.fetch = self.fetch or (apt_fetch_factory(package) if package else noop)
        self.fetched = self.fetched or (
            (lambda ctx: debian_binary(package) is not None) if package else always
        )


LOG4J2_TEMPLATE = """\
status = warn
name = qp-{service}
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.zk.name = org.apache.kafka
logger.zk.level = INFO
logger.reflections.name = org.reflections
logger.reflections.level = ERROR
"""


def write_log4j2(ctx: StackContext, service: str) -> Path:
    path = ctx.conf / service / "log4j2.properties"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(LOG4J2_TEMPLATE.format(service=service))
    return path


# C1-only JIT for the stack's JVMs (local volumes are tiny, start time dominates): on the loaded 2-core VM
# registry/Connect started in 17-25 s instead of 24-45 s and Kafka in 4-6 s instead of 10 s.
# QP_<SERVICE>_JVM_OPTS="-XX:TieredStopAtLevel=4" restores full tiering.
FAST_START_JIT = ["-XX:TieredStopAtLevel=1"]


def jvm_extra_opts(service: str) -> list[str]:
    """Extra JVM flags from ``QP_<SERVICE>_JVM_OPTS`` (whitespace-separated), appended last so they win."""
    import shlex

    env = stack_env()
    opts = {"kafka": env.kafka_jvm_opts, "registry": env.registry_jvm_opts, "connect": env.connect_jvm_opts}
    return shlex.split(opts[service])


def jvm_base(ctx: StackContext, service: str, heap: tuple[str, str]) -> list[str]:
    log4j = write_log4j2(ctx, service)
    return [
        java_executable(),
        f"-Xms{heap[0]}",
        f"-Xmx{heap[1]}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=50",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        "-Djava.net.preferIPv4Stack=true",
        f"-Dlog4j2.configurationFile=file:{log4j}",
    ]


def jvm_command(ctx: StackContext, service: str, heap: tuple[str, str], main: str, *args: str) -> list[str]:
    """``java`` with the common flags and ``heap`` (min, max), C1-only JIT, ``QP_<SERVICE>_JVM_OPTS`` last,
    the service's resolved jars (``<lib>/<service>/*``) as class path, then ``main`` and ``args``."""
    return [*jvm_base(ctx, service, heap), *FAST_START_JIT, *jvm_extra_opts(service), "-cp",
            f"{ctx.lib / service}/*", main, *args]  # fmt: skip


def port_open(endpoint: Endpoint, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout):
            return True
    except OSError:
        return False


def debian_binary(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)


def apt_fetch_factory(binary: str) -> Callable[[StackContext], None]:
    def fetch(ctx: StackContext) -> None:
        if debian_binary(binary):
            return
        log = ctx.logs / "apt.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        with open(log, "a") as handle:
            subprocess.call(
                [*sudo, "apt-get", "update", "-qq"], stdout=handle, stderr=subprocess.STDOUT, env=env
            )
            rc = subprocess.call(
                [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", binary],
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=env,
            )
        if rc != 0 or not debian_binary(binary):
            raise StackError(f"installing Debian package {binary} failed (exit {rc}); see {log}")

    return fetch


def noop(ctx: StackContext) -> None:
    return None


def always(ctx: StackContext) -> bool:
    return True
