"""Spark session factory for the feature tables.

``get_spark_session()`` returns a SparkSession configured for the local stack:

* master ``local[*]`` by default, or a ``spark://`` master (``Settings.spark_master`` / ``master=``);
* the JVM jars of ``infra/spark/pom.xml`` (spark-avro, Iceberg Spark runtime + AWS bundle, hadoop-aws,
  SQLite / PostgreSQL JDBC) resolved once into ``<runtime_dir>/lib/spark`` and passed as absolute
  ``spark.jars`` paths (never ``spark.jars.packages``);
* an Iceberg JDBC catalog named ``Settings.iceberg_catalog_name`` on ``Settings.iceberg_catalog_uri``
  (SQLite by default, PostgreSQL by configuration), warehouse ``Settings.iceberg_warehouse``; an
  ``s3://`` warehouse uses Iceberg's S3FileIO against ``Settings.s3_endpoint_url`` (path-style);
* s3a configured against the same endpoint for reading the raw landed Avro files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

from qp_assets.settings import PROJECT_ROOT, Settings, load_env

log = logging.getLogger(__name__)

SPARK_POM = PROJECT_ROOT / "infra" / "spark" / "pom.xml"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
# Jar file name prefixes that must be present after resolution (guards against a half-filled cache).
REQUIRED_JARS = (
    "spark-avro_2.13-",
    "iceberg-spark-runtime-4.0_2.13-",
    "iceberg-aws-bundle-",
    "hadoop-aws-",
    "s3-transfer-manager-",
    "sqlite-jdbc-",
    "postgresql-",
    "avro-1.12.1",
)


#: JVM options of the driver and executors: S3 checksums as S3-compatible stores expect them, and the
#: platform's log4j2 configuration (warnings only, no start-up notices; infra/spark/log4j2.properties).
_JAVA_OPTIONS = (
    "-Daws.requestChecksumCalculation=when_required -Daws.responseChecksumValidation=when_required "
    f"-Dlog4j2.configurationFile=file:{PROJECT_ROOT / 'infra' / 'spark' / 'log4j2.properties'}"
)


def spark_jar_dir(settings: Settings | None = None) -> Path:
    """Folder holding the resolved Spark extra jars (``<runtime_dir>/lib/spark``)."""
    settings = settings or Settings.from_env()
    return settings.runtime_dir / "lib" / "spark"


def _pom_digest(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()[:16]


def resolve_spark_jars(settings: Settings | None = None, pom: Path = SPARK_POM) -> list[Path]:
    """Resolve the pinned pom into ``<runtime_dir>/lib/spark`` (cached by pom digest); return jar paths.

    Uses ``qp_assets.stack.maven.resolve_pom`` when the stack package provides it, else runs
    ``mvn dependency:copy-dependencies`` (maven-dependency-plugin 3.8.1) directly.
    """
    dest = spark_jar_dir(settings)
    marker = dest / ".pom-sha256"
    digest = _pom_digest(pom)

    def jars() -> list[Path]:
        return sorted(p.resolve() for p in dest.glob("*.jar"))

    def complete(found: list[Path]) -> bool:
        names = [p.name for p in found]
        return all(any(n.startswith(prefix) for n in names) for prefix in REQUIRED_JARS)

    try:
        from qp_assets.stack.maven import resolve_pom
    except ImportError:  # stack package not present: plain Maven below
        resolve_pom = None
    if resolve_pom is not None:
        resolve_pom(pom, dest)  # cached by pom hash; atomic rename of a staging folder
        found = jars()
        if complete(found):
            return found
        log.warning("resolve_pom left %s incomplete; resolving with mvn directly", dest)
    elif marker.exists() and marker.read_text().strip() == digest and complete(jars()):
        return jars()

    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("mvn not found on PATH: needed once to resolve infra/spark/pom.xml")
    dest.mkdir(parents=True, exist_ok=True)
    log.info("resolving Spark jars from %s into %s (first run downloads from Maven Central)", pom, dest)
    subprocess.run(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(pom),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={dest}",
        ],
        check=True,
    )
    found = jars()
    if not complete(found):
        missing = [p for p in REQUIRED_JARS if not any(j.name.startswith(p) for j in found)]
        raise RuntimeError(f"Spark jar resolution incomplete in {dest}: missing {missing}")
    marker.write_text(digest + "\n")
    return found


def jdbc_catalog_uri(uri: str) -> tuple[str, dict[str, str]]:
    """Translate ``Settings.iceberg_catalog_uri`` (SQLAlchemy form) into a JDBC URI + JDBC properties.

    ``sqlite:////abs/catalog.db`` -> ``jdbc:sqlite:/abs/catalog.db``;
    ``postgresql[+driver]://user:pw@host:port/db`` -> ``jdbc:postgresql://host:port/db`` with
    ``jdbc.user`` / ``jdbc.password``; a ``jdbc:`` URI is passed through unchanged.
    """
    if uri.startswith("jdbc:"):
        return uri, {}
    if uri.startswith("sqlite:///"):
        return f"jdbc:sqlite:{Path(uri[len('sqlite:///') :]).resolve()}", {}
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme in ("postgresql", "postgres"):
        props: dict[str, str] = {}
        if parts.username:
            props["jdbc.user"] = unquote(parts.username)
        if parts.password:
            props["jdbc.password"] = unquote(parts.password)
        host = parts.hostname or "127.0.0.1"
        port = f":{parts.port}" if parts.port else ""
        query = f"?{parts.query}" if parts.query else ""
        return f"jdbc:postgresql://{host}{port}{parts.path}{query}", props
    raise ValueError(f"iceberg_catalog_uri: unsupported scheme in {uri!r} (use sqlite:/// or postgresql://)")


def catalog_conf(settings: Settings) -> dict[str, str]:
    """Spark conf entries for the Iceberg JDBC catalog named ``settings.iceberg_catalog_name``."""
    name = settings.iceberg_catalog_name
    jdbc_uri, jdbc_props = jdbc_catalog_uri(settings.iceberg_catalog_uri)
    if jdbc_uri.startswith("jdbc:sqlite:"):
        Path(jdbc_uri[len("jdbc:sqlite:") :]).parent.mkdir(parents=True, exist_ok=True)
    prefix = f"spark.sql.catalog.{name}"
    conf = {
        prefix: "org.apache.iceberg.spark.SparkCatalog",
        f"{prefix}.type": "jdbc",
        f"{prefix}.uri": jdbc_uri,
        f"{prefix}.warehouse": settings.iceberg_warehouse,
        # Other processes (PyIceberg, other Spark drivers) commit too: always read fresh metadata.
        f"{prefix}.cache-enabled": "false",
    }
    conf.update({f"{prefix}.{k}": v for k, v in jdbc_props.items()})
    if jdbc_uri.startswith("jdbc:sqlite:"):
        # Iceberg's JdbcCatalog.initialize() probes for its tables with DatabaseMetaData.getTables and
        # never closes that ResultSet when they exist: the open statement holds SQLite's shared lock for
        # the session's lifetime, and every writer in another process fails with SQLITE_BUSY. The tables
        # are created beforehand by ``catalog.ensure_catalog_tables`` (get_spark_session does it).
        conf[f"{prefix}.jdbc.init-catalog-tables"] = "false"
    if settings.iceberg_warehouse.startswith(("s3://", "s3a://")):
        conf.update(
            {
                f"{prefix}.io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
                f"{prefix}.s3.endpoint": settings.s3_endpoint_url,
                f"{prefix}.s3.path-style-access": "true",
                f"{prefix}.s3.access-key-id": settings.aws_access_key_id,
                f"{prefix}.s3.secret-access-key": settings.aws_secret_access_key,
                f"{prefix}.client.region": settings.aws_region,
            }
        )
    return conf


def s3a_conf(settings: Settings) -> dict[str, str]:
    """Hadoop s3a settings (``spark.hadoop.*``) for reading raw landed files from the S3 endpoint."""
    endpoint = settings.s3_endpoint_url
    return {
        "spark.hadoop.fs.s3a.endpoint": endpoint,
        "spark.hadoop.fs.s3a.endpoint.region": settings.aws_region,
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": str(endpoint.startswith("https")).lower(),
        "spark.hadoop.fs.s3a.access.key": settings.aws_access_key_id,
        "spark.hadoop.fs.s3a.secret.key": settings.aws_secret_access_key,
        "spark.hadoop.fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.attempts.maximum": "3",
        "spark.hadoop.fs.s3a.retry.limit": "3",
    }


def session_conf(settings: Settings, master: str, jars: list[Path]) -> dict[str, str]:
    """Every Spark conf entry ``get_spark_session`` sets (exposed for inspection and tests)."""
    # avro-1.12.1 must shadow pyspark's avro-1.12.0 (array<double> read as float, AVRO-4108).
    avro_fix = [str(j) for j in jars if j.name.startswith("avro-1.12.1")]
    conf = {
        "spark.jars": ",".join(str(j) for j in jars if not j.name.startswith("avro-1.12.1")),
        "spark.driver.extraClassPath": ":".join(avro_fix),
        "spark.executor.extraClassPath": ":".join(avro_fix),
        "spark.driver.memory": "1g",
        "spark.executor.memory": "1g",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        "spark.sql.shuffle.partitions": "4",
        "spark.default.parallelism": "4",
        "spark.sql.adaptive.enabled": "true",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # Keys are declared NOT NULL; the build drops records with null keys before writing.
        "spark.sql.iceberg.check-nullability": "false",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.driver.extraJavaOptions": _JAVA_OPTIONS,
        "spark.executor.extraJavaOptions": _JAVA_OPTIONS,
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
    }
    if master.startswith("spark://"):
        conf.update({"spark.cores.max": "1", "spark.driver.host": "127.0.0.1"})
    conf.update(catalog_conf(settings))
    conf.update(s3a_conf(settings))
    return conf


def get_spark_session(
    settings: Settings | None = None, master: str | None = None, app_name: str = "qp-features"
):
    """Return a SparkSession for the feature tables (see module doc); reuses an active one if present.

    With the stack's Spark Connect server reachable (``Settings.spark_connect_url``) and no ``spark://``
    master asked for, the session is a Spark Connect client of that long-lived server: no JVM start and
    warm JIT per build (about 6 s instead of 23 s for a day's ten tables). Otherwise an in-process Spark:
    ``master`` defaults to ``Settings.spark_master`` (``local[*]``, which means the Connect server when it
    runs); pass ``spark://host:7077`` for the standalone cluster. Driver memory is 1 GiB; jars are resolved once and cached.
    """
    settings = settings or Settings.from_env()
    master = master or settings.spark_master or "local[*]"
    if master == DEFAULT_MASTER and connect_server_reachable(settings):
        return remote_session(settings)
    return local_session(settings, master, app_name)


#: The master that means "wherever the platform runs Spark": the stack's Spark Connect server when it runs.
#: Any other master (``local[2]``, ``spark://...``) asks for an in-process session on exactly that master.
DEFAULT_MASTER = "local[*]"


def connect_server_reachable(settings: Settings, timeout_s: float = 1.0) -> bool:
    """Whether ``settings.spark_connect_url`` is set and accepts TCP connections within ``timeout_s``."""
    import socket

    if not settings.spark_connect_url:
        return False
    host, port = connect_endpoint(settings.spark_connect_url)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        log.warning(
            "Spark Connect server %s not reachable: starting an in-process Spark", settings.spark_connect_url
        )
        return False


def connect_endpoint(url: str) -> tuple[str, int]:
    """(host, port) of an ``sc://host:port[/;params]`` URL (port 15002 when absent)."""
    parts = urlsplit(url.replace("sc://", "http://", 1))
    if not url.startswith("sc://") or not parts.hostname:
        raise ValueError(f"SPARK_CONNECT_URL={url!r}: expected sc://host:port")
    return parts.hostname, parts.port or 15002


#: Conf keys holding credentials: never sent to (or stored in) the Spark Connect server's configuration;
#: the server reads S3 credentials from its environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
_S3_KEY_SUFFIXES = (".s3.access-key-id", ".s3.secret-access-key", "fs.s3a.access.key", "fs.s3a.secret.key")
_SECRET_KEY_SUFFIXES = (*_S3_KEY_SUFFIXES, ".jdbc.password")


def _without_secrets(
    conf: dict[str, str], suffixes: tuple[str, ...] = _SECRET_KEY_SUFFIXES
) -> dict[str, str]:
    return {k: v for k, v in conf.items() if not k.endswith(suffixes)}


def _call_timeouts() -> tuple[float, float]:
    """(unary call deadline, streaming call deadline) in seconds: ``QP_SPARK_CALL_TIMEOUT_S`` (default 60)
    for configuration/analysis calls, ``QP_SPARK_STREAM_TIMEOUT_S`` (default 600) for each execution
    stream (the server ends a stream after 2 minutes and the client re-attaches with a new call, so a
    long query is not cut; a stream with no answer at all is)."""
    env = load_env()
    return env.spark_call_timeout_s, env.spark_stream_timeout_s


def _deadline_interceptor(unary_s: float, stream_s: float):
    """A gRPC client interceptor giving every call without a deadline one: ``unary_s`` for unary calls,
    ``stream_s`` for server-streaming ones (pyspark's Connect client sets none)."""
    import collections

    import grpc

    class _Details(
        collections.namedtuple(
            "_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
        ),
        grpc.ClientCallDetails,
    ):
        pass

    def bounded(details, seconds: float):
        if details.timeout is not None:
            return details
        return _Details(
            details.method,
            seconds,
            details.metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    class CallDeadlines(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
        def intercept_unary_unary(self, continuation, client_call_details, request):
            return continuation(bounded(client_call_details, unary_s), request)

        def intercept_unary_stream(self, continuation, client_call_details, request):
            return continuation(bounded(client_call_details, stream_s), request)

    return CallDeadlines()


def _call_error(exc: BaseException) -> str:
    """One line for a failed Connect call: the gRPC status and details (e.g. ``DEADLINE_EXCEEDED: Deadline
    Exceeded``) when it is a gRPC error, else the exception's first line."""
    import re

    text = str(exc)
    status = re.search(r"StatusCode\.(\w+)", text)
    detail = re.search(r'details = "([^"]*)"', text)
    if status:
        return f"{status.group(1)}: {detail.group(1) if detail else ''}".rstrip(": ")
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


#: Retries of calls the server refused (UNAVAILABLE: down, restarting): about 15 s in all, then the error
#: names the server (pyspark's default retries for about 10 minutes).
CONNECT_RETRIES = {"max_retries": 6, "initial_backoff": 50, "backoff_multiplier": 4.0, "max_backoff": 5000}


def remote_session(settings: Settings):
    """A Spark Connect session on ``settings.spark_connect_url`` whose Iceberg catalog is the one
    ``settings`` names (set on the session, without credentials: a private test catalog works as well as
    the stack's). A session whose server restarted is replaced by a new one.

    Every call is bounded (:func:`_call_timeouts`; a server that accepts and never answers fails the call
    with DEADLINE_EXCEEDED), and a refused call is retried for about 15 s (``CONNECT_RETRIES``). Raises
    RuntimeError naming the server when a fresh session cannot take its catalog configuration either.
    """
    from pyspark.sql.connect.client import DefaultChannelBuilder
    from pyspark.sql.connect.client.retries import DefaultPolicy
    from pyspark.sql.connect.session import SparkSession

    unary_s, stream_s = _call_timeouts()
    url = settings.spark_connect_url
    catalog = _without_secrets(catalog_conf(settings))
    if catalog.get(f"spark.sql.catalog.{settings.iceberg_catalog_name}.jdbc.init-catalog-tables") == "false":
        from qp_assets.features.catalog import ensure_catalog_tables

        ensure_catalog_tables(settings)  # Spark will not create them (see catalog_conf)
    if "SPARK_CONNECT_MODE_ENABLED" not in os.environ:  # one mode per process (see local_session)
        classic = SparkSession.getActiveSession()
        if classic is not None:
            classic.stop()
    for attempt in (1, 2):
        os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"  # pyspark.sql.functions build Connect columns
        channel = DefaultChannelBuilder(url)
        channel.add_interceptor(_deadline_interceptor(unary_s, stream_s))
        spark = SparkSession.builder.channelBuilder(channel).getOrCreate()
        spark._client.set_retry_policies([DefaultPolicy(**CONNECT_RETRIES)])
        try:
            for key, value in catalog.items():
                spark.conf.set(key, value)
            return spark
        except Exception as exc:  # stale session (server restarted) or server not answering
            try:
                spark.stop()
            except Exception:  # noqa: BLE001 - the session is being discarded anyway
                pass
            if attempt == 2:
                raise RuntimeError(f"Spark Connect server {url} did not answer: {_call_error(exc)}") from exc
    raise AssertionError("unreachable")


def is_remote(spark) -> bool:
    """Whether ``spark`` is a Spark Connect client session."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def describe_master(spark) -> str:
    """Where a session computes: its master (in-process) or ``sc://... (master)`` (Spark Connect)."""
    if not is_remote(spark):
        return spark.sparkContext.master
    try:
        server_master = spark.conf.get("spark.master")
    except Exception:  # noqa: BLE001 - informative only
        server_master = "?"
    return f"spark-connect ({server_master})"


def local_session(settings: Settings, master: str, app_name: str = "qp-features"):
    """An in-process (py4j) SparkSession with :func:`session_conf`.

    pyspark serves one mode per process: if this process used Spark Connect, its Connect session is
    stopped first (its DataFrames become unusable), then functions build in-process columns again."""
    from pyspark.sql import SparkSession

    if os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None) is not None:
        from pyspark.sql.connect.session import SparkSession as RemoteSession

        active = RemoteSession.getActiveSession()
        if active is not None:
            active.stop()

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    jars = resolve_spark_jars(settings)
    conf = session_conf(settings, master, jars)
    if conf.get(f"spark.sql.catalog.{settings.iceberg_catalog_name}.jdbc.init-catalog-tables") == "false":
        from qp_assets.features.catalog import ensure_catalog_tables

        ensure_catalog_tables(settings)  # Spark will not create them (see catalog_conf)
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


#: Main class of the Spark Connect server shipped in pyspark's jars.
CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
#: SQLite catalog: how long a writer waits for the lock (ms) instead of failing at once.
SQLITE_BUSY_TIMEOUT_MS = 60_000


def connect_server_conf(settings: Settings) -> dict[str, str]:
    """Every conf entry of the stack's Spark Connect server: :func:`session_conf` for
    ``Settings.spark_master`` plus the gRPC binding of ``Settings.spark_connect_url`` and 1.5 GiB of driver
    memory (sessions of concurrent feature runs share it). Idle client sessions (a run worker killed
    mid-build) are dropped after 10 minutes."""
    master = settings.spark_master if settings.spark_master.startswith("spark://") else "local[*]"
    conf = session_conf(settings, master, resolve_spark_jars(settings))
    host, port = connect_endpoint(settings.spark_connect_url or "sc://127.0.0.1:15002")
    conf.update(
        {
            "spark.master": master,
            "spark.app.name": "qp-spark-connect",
            "spark.driver.memory": "1536m",
            "spark.connect.grpc.binding.address": host,
            "spark.connect.grpc.binding.port": str(port),
            "spark.connect.session.manager.defaultSessionTimeout": "10min",
        }
    )
    prefix = f"spark.sql.catalog.{settings.iceberg_catalog_name}"
    if conf.get(f"{prefix}.uri", "").startswith("jdbc:sqlite:"):
        conf[f"{prefix}.jdbc.busy_timeout"] = str(SQLITE_BUSY_TIMEOUT_MS)
    # S3 keys never in the conf (a client could read them back); the JDBC password of a PostgreSQL catalog
    # stays (the catalog cannot connect without it): the conf file is 0600, and it is loopback-only.
    conf = _without_secrets(conf, _S3_KEY_SUFFIXES)
    # S3 credentials from the server's environment (see connect_server_env), for s3a and Iceberg alike
    conf["spark.hadoop.fs.s3a.aws.credentials.provider"] = (
        "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider"
    )
    return conf


def connect_server_env(settings: Settings) -> dict[str, str]:
    """Environment of the Spark Connect server: the S3 credentials it reads (never in its conf)."""
    return {
        "AWS_ACCESS_KEY_ID": settings.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": settings.aws_secret_access_key,
    }


JAVA_OPTIONS_KEY = "spark.driver.extraJavaOptions"


def connect_scratch_dir(settings: Settings) -> Path:
    """``<runtime dir>/tmp/spark-connect``, emptied: the Spark Connect server's local and temp directory.

    Spark copies every jar it serves (about 120 MB) into a fresh ``spark-<uuid>/userFiles`` directory at
    each start and removes it only in a shutdown hook, which a stop by signal can skip. Kept under the
    runtime directory and emptied before each start (one server per runtime), these copies no longer pile
    up in ``/tmp`` (64 of them, 7.7 GB, after a day of stack restarts)."""
    scratch = settings.runtime_dir / "tmp" / "spark-connect"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    return scratch


def serve_connect(settings: Settings | None = None) -> None:
    """Replace this process with the stack's Spark Connect server (``qp stack`` runs it as a service).

    The configuration goes through a 0600 properties file (never argv) and holds no credentials: S3 keys
    come from the environment, so no client can read them back with ``spark.conf.get``. A background
    warm-up build (``features/warmup.py``) runs once the server answers.
    """
    import pyspark

    settings = settings or Settings.from_env()
    conf = connect_server_conf(settings)
    if conf.get(f"spark.sql.catalog.{settings.iceberg_catalog_name}.jdbc.init-catalog-tables") == "false":
        from qp_assets.features.catalog import ensure_catalog_tables

        ensure_catalog_tables(settings)
    scratch = connect_scratch_dir(settings)
    conf[JAVA_OPTIONS_KEY] = f"{conf.get(JAVA_OPTIONS_KEY, '')} -Djava.io.tmpdir={scratch}".strip()
    conf_dir = settings.runtime_dir / "conf" / "spark-connect"
    conf_dir.mkdir(parents=True, exist_ok=True)
    props = conf_dir / "spark-connect.conf"
    fd = os.open(props, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        for key, value in conf.items():
            out.write(f"{key} {value}\n")
    home = Path(pyspark.__file__).parent
    argv = [str(home / "bin" / "spark-submit"), "--properties-file", str(props),
            "--class", CONNECT_SERVER_CLASS, "spark-internal"]  # fmt: skip
    env = {
        **os.environ,
        **connect_server_env(settings),
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOCAL_DIRS": str(scratch),
        "PYSPARK_PYTHON": sys.executable,
    }
    from qp_assets.features.warmup import start_in_background

    start_in_background(settings.runtime_dir / "logs" / "spark-warmup.log")  # waits for this server's port
    os.execve(argv[0], argv, env)


if __name__ == "__main__":
    serve_connect()
