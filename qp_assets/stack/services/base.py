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
from qp_assets.stack.maven import is_resolved, resolve_pom

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


def _runtime_subdir(name: str) -> property:
    """A :class:`StackContext` property: ``<runtime dir>/<name>``."""
    return property(lambda ctx: ctx.root / name, doc=f"<runtime dir>/{name}")


def _endpoint_of(setting: str, default_port: int) -> property:
    """A :class:`StackContext` property: the Endpoint of ``settings.<setting>`` (``default_port`` when the
    value names none)."""
    return property(
        lambda ctx: _endpoint(getattr(ctx.settings, setting), default_port),
        doc=f"Endpoint of settings.{setting} (default port {default_port})",
    )


def _extra_port(variable: str, default: int) -> property:
    """A :class:`StackContext` property: a port the settings do not carry, from ``stack_env().<variable>``,
    else ``default + QP_PORT_OFFSET``."""
    return property(
        lambda ctx: getattr(stack_env(), variable) or default + ctx.settings.port_offset,
        doc=f"stack_env().{variable}, else {default} + port offset",
    )


@dataclass
class StackContext:
    """Everything a service needs to render its config and command line."""

    settings: Settings

    @property
    def root(self) -> Path:
        return self.settings.runtime_dir

    lib = _runtime_subdir("lib")
    data = _runtime_subdir("data")
    conf = _runtime_subdir("conf")
    logs = _runtime_subdir("logs")
    pids = _runtime_subdir("pids")

    def data_dir(self, *parts: str) -> Path:
        """``<runtime dir>/data/<parts...>``, created if missing."""
        path = self.data.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log_file(self, service: str) -> Path:
        return self.logs / f"{service}.log"

    def pid_file(self, service: str) -> Path:
        return self.pids / f"{service}.pid"

    # endpoints -------------------------------------------------------------------------------
    kafka = _endpoint_of("kafka_bootstrap_servers", 9092)
    kafka_controller_port = _extra_port("kafka_controller_port", 9093)
    registry = _endpoint_of("schema_registry_url", 8081)
    registry_management_port = _extra_port("registry_management_port", 8085)
    connect = _endpoint_of("kafka_connect_url", 8083)
    s3 = _endpoint_of("s3_endpoint_url", 8333)
    pushgateway = _endpoint_of("pushgateway_url", 9091)
    prometheus = _endpoint_of("prometheus_url", 9090)

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


def ready_probe(setting: str) -> Callable[[StackContext], bool]:
    """Probe of a Prometheus-family server (Prometheus, PushGateway) at ``settings.<setting>`` (a URL, or
    ``host:port`` meaning http): ``GET <it>/-/ready`` answers 2xx."""

    def probe(ctx: StackContext) -> bool:
        base = getattr(ctx.settings, setting).rstrip("/")
        return http_ok(f"{base if '://' in base else 'http://' + base}/-/ready")

    return probe


@dataclass
class Service:
    """One service of the stack.

    ``fetch`` downloads/resolves what the service needs (idempotent, cached; default: nothing, the
    ``debian_package`` through apt, or the ``maven_pom`` (under ``infra/``) resolved with ``maven_goal`` into
    ``<runtime>/lib/<name>``); ``command`` renders config files and returns the argv; ``probe`` is the
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
    maven_pom: Path | None = None
    maven_goal: str = "copy-dependencies"
    after_ready: Callable[[StackContext], None] | None = None
    before_start: Callable[[StackContext], None] | None = None
    env: Callable[[StackContext], dict[str, str]] = field(default=lambda ctx: {})
    depends_on: tuple[str, ...] = ()
    start_timeout: float = 90.0
    stop_grace: float = 20.0
    #: The service refuses a port any socket still uses (SeaweedFS's ``weed mini`` checks each of its ports
    #: before binding): the launcher waits until they are free of closing connections.
    exclusive_ports: bool = False

    def __post_init__(self) -> None:
        attribute = self.name.replace("-", "_")
        self.endpoint = self.endpoint or (lambda ctx: getattr(ctx, attribute))
        self.ports = self.ports or (lambda ctx: [self.endpoint(ctx).port])
        package = self.debian_package
        if self.maven_pom is not None:
            self.fetch, self.fetched = maven_fetch_factory(self.name, self.maven_pom, self.maven_goal)
        self.fetch = self.fetch or (apt_fetch_factory(package) if package else noop)
        self.fetched = self.fetched or (
            (lambda ctx: debian_binary(package) is not None) if package else always
        )


def prometheus_family_service(
    name: str, package: str, flags: Callable[[StackContext, Path], list[str]], **fields: object
) -> Service:
    """A Prometheus-project server (Prometheus, PushGateway) run from the binary of Debian ``package``:
    argv ``<binary> --web.listen-address=127.0.0.1:<port of ctx.<name>> <flags(ctx, data dir)>`` with the data
    dir ``<runtime dir>/data/<name>``; ready when ``GET <settings.<name>_url>/-/ready`` answers 2xx (see
    :func:`ready_probe`). ``fields``: the record's other :class:`Service` fields (timeouts, dependencies)."""

    def command(ctx: StackContext) -> list[str]:
        binary = require_debian_binary(package)
        data = ctx.data_dir(name)
        return [binary, f"--web.listen-address=127.0.0.1:{getattr(ctx, name).port}", *flags(ctx, data)]

    return Service(
        name=name, debian_package=package, command=command, probe=ready_probe(f"{name}_url"), **fields
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


def require_debian_binary(package: str) -> str:
    """The installed binary of Debian ``package`` (same name); StackError saying how to install it otherwise."""
    binary = debian_binary(package)
    if binary is None:
        raise StackError(f"{package} not installed; run 'qp stack fetch' (apt-get install)")
    return binary


def maven_fetch_factory(
    name: str, pom: Path, goal: str
) -> tuple[Callable[[StackContext], None], Callable[[StackContext], bool]]:
    """``fetch`` / ``fetched`` of a service whose jars come from ``pom``: resolved with the
    maven-dependency-plugin ``goal`` into ``<runtime>/lib/<name>`` (log ``logs/maven-<name>.log``)."""

    def fetch(ctx: StackContext) -> None:
        resolve_pom(pom, ctx.lib / name, goal=goal, log_file=ctx.logs / f"maven-{name}.log")

    def fetched(ctx: StackContext) -> bool:
        return is_resolved(pom, ctx.lib / name)

    return fetch, fetched


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
