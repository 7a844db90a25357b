"""One home for configuration: every ``QP_*``, endpoint and credential variable the product reads.

:class:`Env` is the typed, validated view of the environment (pydantic): one field per variable, its
alias the variable's name, its description the documentation (``docs/settings.md`` is generated from it
by ``python -m qp_assets.settings --markdown``, and ``tests/test_settings_units.py`` fails when the two
differ or when a module reads a variable without going through :func:`load_env`). A bad value fails at
load with a :class:`SettingsError` naming the variable (and the value, unless it is a secret).

:class:`Settings` is the resolved view of the endpoints (defaults: the local stack started by
``qp stack up`` on 127.0.0.1, ports shifted by ``QP_PORT_OFFSET``). Nothing secret lives in the
repository: the default S3 keys below are the throwaway keys of the loopback-only SeaweedFS the stack starts.
"""

from __future__ import annotations

import os
import re
import shutil
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Variables of other tools that our code reads, sets or passes on to child processes (not product
#: settings, so not in :class:`Env`; listed in ``docs/settings.md`` below the table).
TOOL_VARIABLES = (
    "CUDA_VISIBLE_DEVICES",
    "DAGSTER_HOME",
    "JAVA_HOME",
    "MAVEN_OPTS",
    "PYSPARK_PYTHON",
    "SPARK_CONNECT_MODE_ENABLED",
    "SPARK_DAEMON_MEMORY",
    "SPARK_HOME",
    "SPARK_LOCAL_DIRS",
    "SPARK_LOCAL_IP",
    "SPARK_NO_DAEMONIZE",
)


class SettingsError(ValueError):
    """An environment variable has an unusable value; the message names the variable."""


Port = Annotated[int, Field(gt=0, lt=65536)]
NonNegInt = Annotated[int, Field(ge=0)]
PosInt = Annotated[int, Field(gt=0)]
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
_RELATIVE_DAY = re.compile(r"^today-\d{1,5}$")
_OFF = ("0", "off", "false", "no")


def _var(alias: str, doc: str, default=None, *, secret: bool = False, shown: str | None = None):
    """A field read from variable ``alias``; ``shown`` is the default as the docs table prints it."""
    extra = {"secret": secret, "shown": shown}
    return Field(default=default, alias=alias, description=doc, repr=not secret, json_schema_extra=extra)


class Env(BaseModel):
    """Every variable the product reads (unset or empty: the default). Grouped as in ``docs/settings.md``."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    # --- local stack: where and on which ports
    home: str | None = _var(
        "QP_HOME", "runtime directory (logs, PID files, data, cached jars)", shown="<project>/.qp"
    )
    port_offset: Annotated[int, Field(ge=0, le=40000)] = _var(
        "QP_PORT_OFFSET",
        "added to every default port of the local stack (a second stack beside the first)",
        0,
    )
    kafka_controller_port: Port | None = _var(
        "QP_KAFKA_CONTROLLER_PORT", "KRaft controller port", shown="9093 + offset"
    )
    registry_management_port: Port | None = _var(
        "QP_REGISTRY_MANAGEMENT_PORT", "registry's Quarkus management port", shown="8085 + offset"
    )
    seaweedfs_port_offset: int | None = _var(
        "QP_SEAWEEDFS_PORT_OFFSET",
        "shifts SeaweedFS's internal ports (master, volume, filer, ...)",
        shown="QP_PORT_OFFSET",
    )
    kafka_jvm_opts: str = _var("QP_KAFKA_JVM_OPTS", "extra JVM flags of the Kafka broker, appended last", "")
    registry_jvm_opts: str = _var(
        "QP_REGISTRY_JVM_OPTS", "extra JVM flags of the registry, appended last", ""
    )
    connect_jvm_opts: str = _var("QP_CONNECT_JVM_OPTS", "extra JVM flags of Kafka Connect, appended last", "")
    kafka_security: Literal["plaintext", "scram"] = _var(
        "QP_KAFKA_SECURITY", "`scram`: the stack's Kafka listener requires SASL/SCRAM-SHA-512", "plaintext"
    )
    registry_auth: Literal["none", "basic"] = _var(
        "QP_REGISTRY_AUTH", "`basic`: the stack's registry requires HTTP basic auth", "none"
    )

    # --- endpoints and credentials
    kafka_bootstrap_servers: str | None = _var(
        "KAFKA_BOOTSTRAP_SERVERS", "Kafka brokers, host:port[,host:port]", shown="127.0.0.1:9092 + offset"
    )
    schema_registry_url: str | None = _var(
        "SCHEMA_REGISTRY_URL",
        "Confluent-compatible registry API",
        shown="http://127.0.0.1:8081 + offset/apis/ccompat/v7",
    )
    kafka_connect_url: str | None = _var(
        "KAFKA_CONNECT_URL", "Kafka Connect REST API", shown="http://127.0.0.1:8083 + offset"
    )
    s3_endpoint_url: str | None = _var(
        "S3_ENDPOINT_URL", "S3 endpoint (path-style)", shown="http://127.0.0.1:8333 + offset"
    )
    pushgateway_url: str | None = _var(
        "PUSHGATEWAY_URL", "Prometheus PushGateway", shown="127.0.0.1:9091 + offset"
    )
    prometheus_url: str | None = _var("PROMETHEUS_URL", "Prometheus", shown="http://127.0.0.1:9090 + offset")
    spark_connect_url: str | None = _var(
        "SPARK_CONNECT_URL", "the stack's Spark Connect server", shown="sc://127.0.0.1:15002 + offset"
    )
    spark_connect: bool = _var(
        "QP_SPARK_CONNECT",
        "`off`: feature builds start their own in-process Spark instead of Spark Connect",
        True,
    )
    spark_warmup: bool = _var(
        "QP_SPARK_WARMUP", "`off`: the Spark Connect server skips its warm-up build after a start", True
    )
    spark_nice: Annotated[int, Field(ge=0, le=19)] = _var(
        "QP_SPARK_NICE",
        "CPU niceness of the local Spark Connect server (0-19): feature builds yield to VQE runs",
        10,
    )
    spark_call_timeout_s: PosFloat = _var(
        "QP_SPARK_CALL_TIMEOUT_S", "deadline of a Spark Connect configuration/analysis call (seconds)", 60.0
    )
    spark_stream_timeout_s: PosFloat = _var(
        "QP_SPARK_STREAM_TIMEOUT_S", "deadline of one Spark Connect execution stream (seconds)", 600.0
    )
    spark_master: str = _var(
        "SPARK_MASTER", "Spark master of in-process sessions: local[*] or spark://host:7077", "local[*]"
    )
    aws_access_key_id: str = _var("AWS_ACCESS_KEY_ID", "S3 access key", "qp-local")
    aws_secret_access_key: str = _var(
        "AWS_SECRET_ACCESS_KEY", "S3 secret key", "qp-local-secret", secret=True
    )
    aws_region: str = _var("AWS_REGION", "S3 region", "us-east-1")
    bucket: str = _var(
        "QP_BUCKET", "bucket of the landed results and the Iceberg warehouse", "local-vqe-results"
    )
    iceberg_catalog_name: str = _var(
        "ICEBERG_CATALOG_NAME", "Iceberg catalog name (Spark and PyIceberg)", "qp"
    )
    iceberg_catalog_uri: str | None = _var(
        "ICEBERG_CATALOG_URI", "Iceberg JDBC catalog", shown="sqlite:///<QP_HOME>/iceberg/catalog.db"
    )
    iceberg_warehouse: str | None = _var(
        "ICEBERG_WAREHOUSE", "Iceberg warehouse", shown="s3://<QP_BUCKET>/warehouse"
    )
    kafka_security_protocol: str | None = _var(
        "KAFKA_SECURITY_PROTOCOL", "clients: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL", shown="PLAINTEXT"
    )
    kafka_sasl_mechanism: str | None = _var(
        "KAFKA_SASL_MECHANISM", "clients: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", shown="(none)"
    )
    kafka_sasl_username: str | None = _var(
        "KAFKA_SASL_USERNAME", "SASL user (clients, and the stack under scram)"
    )
    kafka_sasl_password: str | None = _var("KAFKA_SASL_PASSWORD", "SASL password", secret=True)
    kafka_ssl_ca_location: str | None = _var("KAFKA_SSL_CA_LOCATION", "CA file of an SSL listener")
    kafka_ssl_certificate_location: str | None = _var(
        "KAFKA_SSL_CERTIFICATE_LOCATION", "client certificate (mTLS)"
    )
    kafka_ssl_key_location: str | None = _var("KAFKA_SSL_KEY_LOCATION", "client key (mTLS)")
    kafka_ssl_key_password: str | None = _var(
        "KAFKA_SSL_KEY_PASSWORD", "password of the client key", secret=True
    )
    registry_user_info: str | None = _var(
        "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "registry basic auth, `user:password`", secret=True
    )

    # --- streaming
    kafka_delivery_timeout_ms: PosInt = _var(
        "QP_KAFKA_DELIVERY_TIMEOUT_MS", "upper bound of one publish (milliseconds)", 30000
    )
    schema_profile: Literal["prod", "dev"] = _var(
        "QP_SCHEMA_PROFILE", "registry compatibility: `prod` BACKWARD, `dev` NONE", "prod"
    )
    registry_timeout_s: Annotated[float, Field(gt=0, le=300)] = _var(
        "QP_REGISTRY_TIMEOUT_S", "seconds one registry HTTP request may take, (0, 300]", 10.0
    )
    sink_flush_size: PosInt = _var(
        "QP_SINK_FLUSH_SIZE", "records per landed file of the S3 sink (at most)", 100
    )
    sink_rotate_interval_ms: PosInt = _var(
        "QP_SINK_ROTATE_INTERVAL_MS", "the S3 sink closes a file after this many milliseconds", 2000
    )

    # --- Dagster: sensors, runs, checks, alerts
    sensors_running: bool = _var("QP_SENSORS_RUNNING", "`0`: every sensor starts stopped", True)
    requests_per_run: NonNegInt = _var("QP_REQUESTS_PER_RUN", "requests per vqe_runner_job run (at most)", 50)
    request_sensor_start: Literal["earliest", "latest"] = _var(
        "QP_REQUEST_SENSOR_START", "where a new request sensor starts in the topic", "latest"
    )
    request_sensor_grace_s: NonNegInt = _var(
        "QP_REQUEST_SENSOR_GRACE_S",
        "`latest` still takes requests stamped this many seconds before the first tick",
        30,
    )
    request_sensor_wait_s: Annotated[int, Field(ge=0, le=30)] = _var(
        "QP_REQUEST_SENSOR_WAIT_S", "seconds a request sensor tick waits for a request (at most 30)", 5
    )
    request_sensor_interval_s: NonNegInt = _var(
        "QP_REQUEST_SENSOR_INTERVAL_S", "request sensor interval (seconds)", 1
    )
    request_read_timeout_s: Annotated[float, Field(gt=0, le=600)] = _var(
        "QP_REQUEST_READ_TIMEOUT_S",
        "seconds one read of a request range may take before the op retries it",
        60.0,
    )
    request_range_attempts: NonNegInt = _var(
        "QP_REQUEST_RANGE_ATTEMPTS", "runs of one failed request range before the sensor gives up", 5
    )
    request_range_retry_delay_s: NonNegInt = _var(
        "QP_REQUEST_RANGE_RETRY_DELAY_S", "seconds before a failed request range is run again", 60
    )
    landing_lookback_days: NonNegInt = _var(
        "QP_LANDING_LOOKBACK_DAYS", "days listed per landing observation besides today", 2
    )
    landing_sensor_interval_s: NonNegInt = _var(
        "QP_LANDING_SENSOR_INTERVAL_S", "landing sensor interval (seconds)", 2
    )
    landing_sensor_wait_s: Annotated[int, Field(ge=0, le=30)] = _var(
        "QP_LANDING_SENSOR_WAIT_S",
        "seconds a landing sensor tick waits for a new landed file (at most 30)",
        4,
    )
    feature_trigger: Literal["sensor", "automation"] = _var(
        "QP_FEATURE_TRIGGER",
        "what starts feature runs on landed files: declarative automation (automation: the landing sensor "
        "only observes, feature_automation_sensor requests the runs) or, opt-out, the landing sensor (sensor)",
        "automation",
    )
    campaign_sensor_interval_s: Annotated[int, Field(ge=5)] = _var(
        "QP_CAMPAIGN_SENSOR_INTERVAL_S",
        "seconds between campaign sensor ticks (new campaigns, progress refreshes)",
        60,
    )
    partitions_start: str = _var(
        "QP_PARTITIONS_START",
        "first feature partition: `first-landed` (the first day results landed, as the feature builds"
        " recorded it; today-7 until a build has), YYYY-MM-DD or today-N",
        "first-landed",
    )
    feature_catch_up_s: Annotated[float, Field(ge=0)] = _var(
        "QP_FEATURE_CATCH_UP_S",
        "seconds a one-day feature run keeps rebuilding with files landed during its build (0: off)",
        60.0,
    )
    feature_max_retries: NonNegInt = _var("QP_FEATURE_MAX_RETRIES", "retries of a failed feature build", 3)
    feature_retry_delay_s: Annotated[float, Field(ge=0)] = _var(
        "QP_FEATURE_RETRY_DELAY_S", "seconds between feature build retries", 60.0
    )
    variational_tol_ha: Annotated[float, Field(ge=0)] = _var(
        "QP_VARIATIONAL_TOL_HA", "tolerance of the variational-bound check (hartree)", 1e-6
    )
    vqe_cpu_slots: PosInt = _var("QP_VQE_CPU_SLOTS", "concurrent VQE ops on a host without GPU", 1)
    reuse_results: bool = _var(
        "QP_REUSE_RESULTS", "`0`: every request computes (no look-up of an earlier result)", True
    )
    reuse_lookup_timeout_s: Annotated[float, Field(gt=0, le=300)] = _var(
        "QP_REUSE_LOOKUP_TIMEOUT_S",
        "seconds the runner's look-up of an earlier result may take before it computes instead",
        10.0,
    )
    vqe_executor: Literal["local", "k8s"] = _var("QP_VQE_EXECUTOR", "executor of vqe_runner_job", "local")
    vqe_runner_image: str = _var(
        "QP_VQE_RUNNER_IMAGE", "step image under the k8s executor", "qp-vqe-runner:gpu"
    )
    k8s_namespace: str = _var("QP_K8S_NAMESPACE", "namespace under the k8s executor", "quantum-pipeline")
    run_log_level: str = _var(
        "QP_RUN_LOG_LEVEL", "console log level of in-process runs (`qp e2e`)", "WARNING"
    )
    smtp_host: str | None = _var(
        "QP_SMTP_HOST", "SMTP relay of run alerts; unset: the mail sensors start stopped", shown="127.0.0.1"
    )
    smtp_port: Port = _var("QP_SMTP_PORT", "SMTP port", 25)
    smtp_user: str = _var("QP_SMTP_USER", "SMTP login (empty: none)", "")
    smtp_password: str = _var("QP_SMTP_PASSWORD", "SMTP password", "", secret=True)
    alert_from: str = _var("QP_ALERT_FROM", "sender of run alerts", "qp-dagster@localhost")
    alert_to: str = _var("QP_ALERT_TO", "recipients of run alerts, comma-separated", "qp-alerts@localhost")
    airflow_venv: str | None = _var(
        "QP_AIRFLOW_VENV", "virtualenv of the exported Airflow DAGs' check", shown="<QP_HOME>/airflow-venv"
    )

    # --- admission limits of a VQE request (unset: the default of qp_assets.vqe.admission.AdmissionLimits)
    max_atoms: PosInt | None = _var("QP_MAX_ATOMS", "atoms per molecule", shown="50")
    max_electrons: PosInt | None = _var("QP_MAX_ELECTRONS", "electrons per molecule", shown="100")
    max_qubits: PosInt | None = _var("QP_MAX_QUBITS", "qubits after mapping", shown="28")
    max_memory_gib: PosFloat | None = _var("QP_MAX_MEMORY_GIB", "estimated simulator memory (GiB)", shown="8")
    max_iterations: PosInt | None = _var("QP_MAX_ITERATIONS", "optimizer iteration budget", shown="10000")
    max_evaluations: PosInt | None = _var("QP_MAX_EVALUATIONS", "energy evaluations", shown="100000")
    max_shots: PosInt | None = _var("QP_MAX_SHOTS", "shots per evaluation", shown="1000000")
    max_reps: PosInt | None = _var("QP_MAX_REPS", "ansatz repetitions", shown="10")
    max_adapt_operators: PosInt | None = _var(
        "QP_MAX_ADAPT_OPERATORS", "ADAPT operator pool size", shown="500"
    )
    max_wall_s: PosFloat | None = _var("QP_MAX_WALL_S", "wall-clock seconds of one VQE run", shown="3600")

    @field_validator("spark_connect", "spark_warmup", mode="before")
    @classmethod
    def _off(cls, value: object) -> object:
        return str(value).strip().lower() not in _OFF if isinstance(value, str) else value

    @field_validator("kafka_security", "registry_auth", "schema_profile", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("partitions_start")
    @classmethod
    def _day(cls, value: str) -> str:
        if value != "first-landed" and not _RELATIVE_DAY.match(value):
            try:
                date.fromisoformat(value)
            except ValueError:
                raise ValueError(
                    "is neither first-landed, a YYYY-MM-DD date nor today-N (N days before today)"
                ) from None
        return value

    @field_validator("registry_user_info")
    @classmethod
    def _user_info(cls, value: str | None) -> str | None:
        user, sep, password = (value or "").partition(":")
        if value and (not sep or not user or not password):
            raise ValueError("must be 'user:password'")
        return value

    # --------------------------------------------------------------------------------------- loading
    @classmethod
    def variables(cls) -> dict[str, str]:
        """Variable name -> field name, in declaration order."""
        return {f.alias: name for name, f in cls.model_fields.items()}

    @classmethod
    def is_secret(cls, variable: str) -> bool:
        field_ = cls.model_fields[cls.variables()[variable]]
        return bool((field_.json_schema_extra or {}).get("secret"))


def load_env(environ: Mapping[str, str] | None = None) -> Env:
    """The validated :class:`Env` of ``environ`` (default ``os.environ``; read on every call, so a test's
    ``monkeypatch.setenv`` applies at once). Raises :class:`SettingsError` naming the first bad variable."""
    source = os.environ if environ is None else environ
    raw = {var: source[var].strip() for var in Env.variables() if (source.get(var) or "").strip()}
    try:
        return Env.model_validate(raw)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, raw)) from None


def _describe(exc: ValidationError, raw: Mapping[str, str]) -> str:
    messages = []
    for error in exc.errors():
        var = str(error["loc"][0])
        value = "(value not shown)" if Env.is_secret(var) else repr(raw.get(var))
        msg = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "literal_error":
            choices = typing.get_args(Env.model_fields[Env.variables()[var]].annotation)
            msg = "is not one of " + ", ".join(choices)
        messages.append(f"{var}={value} {msg}" if msg.startswith("is ") else f"{var}={value}: {msg}")
    return "; ".join(messages)


def secret_values(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variable -> value of every secret variable that is set, read raw (never raises: redaction uses it
    on error paths, where the environment may be the very thing that is invalid)."""
    source = os.environ if environ is None else environ
    return {var: source.get(var) or "" for var in Env.variables() if Env.is_secret(var) and source.get(var)}


def markdown_table() -> str:
    """The variables table of ``docs/settings.md`` (``python -m qp_assets.settings --markdown``)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for f in Env.model_fields.values():
        extra = f.json_schema_extra or {}
        shown = extra.get("shown") or ("" if f.default in (None, "") else str(f.default))
        if isinstance(f.default, bool):
            shown = "on" if f.default else "off"
        lines.append(f"| `{f.alias}` | {f'`{shown}`' if shown else '(unset)'} | {f.description} |")
    return "\n".join(lines) + "\n"


def port_offset() -> int:
    """``QP_PORT_OFFSET`` (default 0): added to every default port of the local stack.

    One number moves a whole stack (Kafka 9092 -> 9092 + offset, registry, Connect, S3, PushGateway,
    Prometheus and every internal listener), so a second stack (the test suite's, a benchmark's) runs
    beside the user's without touching it. Explicit endpoint variables still win.
    """
    return load_env().port_offset


def runtime_dir() -> Path:
    """Project-local runtime directory (logs, PID files, data, cached jars); ``QP_HOME`` overrides."""
    return Path(load_env().home or str(PROJECT_ROOT / ".qp")).resolve()


def spark_connect_url(offset: int, env: Env | None = None, *, local: bool = False) -> str:
    """The stack's Spark Connect server, ``sc://127.0.0.1:<15002 + offset>`` (``SPARK_CONNECT_URL``
    overrides unless ``local``); ``QP_SPARK_CONNECT=off`` gives "" (feature builds start their own Spark)."""
    env = env or load_env()
    if not env.spark_connect:
        return ""
    return (None if local else env.spark_connect_url) or f"sc://127.0.0.1:{15002 + offset}"


def prepare_dagster_home(home: Path | None = None) -> Path:
    """Make ``DAGSTER_HOME`` ready for ``dagster dev`` / ``dagster job execute`` and export it.

    The home is ``home``, else ``$DAGSTER_HOME``, else ``<runtime_dir>/dagster_home``. The repo's
    ``dagster.yaml`` (run queue limits, pools, telemetry off) is copied in when the home has none; an
    existing one is the user's and is left alone. Called by ``qp stack up``, ``qp e2e`` and the scripts.
    """
    home = Path(home or os.environ.get("DAGSTER_HOME") or runtime_dir() / "dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists():
        shutil.copy(PROJECT_ROOT / "dagster.yaml", target)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


@dataclass(frozen=True)
class Settings:
    """Endpoints of the platform's services, resolved from :class:`Env` (defaults: the local stack on 127.0.0.1)."""

    kafka_bootstrap_servers: str
    schema_registry_url: str
    kafka_connect_url: str
    s3_endpoint_url: str
    aws_access_key_id: str
    aws_secret_access_key: str = field(repr=False)  # never in a printed Settings
    aws_region: str
    bucket: str
    pushgateway_url: str
    prometheus_url: str
    iceberg_catalog_name: str
    iceberg_catalog_uri: str
    iceberg_warehouse: str
    spark_master: str
    runtime_dir: Path
    #: Spark Connect server of the stack (``sc://host:port``), or "" for an in-process Spark per session.
    spark_connect_url: str = ""
    #: ``QP_PORT_OFFSET`` of this stack (shifts the ports that have no endpoint variable, e.g. the controller).
    port_offset: int = 0

    @classmethod
    def from_env(cls, local_offset: int | None = None) -> Settings:
        """Settings from the environment. ``local_offset``: ignore the endpoint variables and point at the
        local stack whose ports are shifted by that offset (for a throw-away second stack)."""
        env = load_env()
        rt = runtime_dir()
        local = local_offset is not None
        off = env.port_offset if local_offset is None else local_offset

        def endpoint(value: str | None, default: str) -> str:
            return default if local or not value else value

        return cls(
            kafka_bootstrap_servers=endpoint(env.kafka_bootstrap_servers, f"127.0.0.1:{9092 + off}"),
            schema_registry_url=endpoint(
                env.schema_registry_url, f"http://127.0.0.1:{8081 + off}/apis/ccompat/v7"
            ),
            kafka_connect_url=endpoint(env.kafka_connect_url, f"http://127.0.0.1:{8083 + off}"),
            s3_endpoint_url=endpoint(env.s3_endpoint_url, f"http://127.0.0.1:{8333 + off}"),
            aws_access_key_id=env.aws_access_key_id,
            aws_secret_access_key=env.aws_secret_access_key,
            aws_region=env.aws_region,
            bucket=env.bucket,
            pushgateway_url=endpoint(env.pushgateway_url, f"127.0.0.1:{9091 + off}"),
            prometheus_url=endpoint(env.prometheus_url, f"http://127.0.0.1:{9090 + off}"),
            iceberg_catalog_name=env.iceberg_catalog_name,
            iceberg_catalog_uri=env.iceberg_catalog_uri or f"sqlite:///{rt / 'iceberg' / 'catalog.db'}",
            iceberg_warehouse=env.iceberg_warehouse or f"s3://{env.bucket}/warehouse",
            spark_master=env.spark_master,
            runtime_dir=rt,
            spark_connect_url=spark_connect_url(off, env, local=local),
            port_offset=off,
        )


if __name__ == "__main__":  # python -m qp_assets.settings --markdown: the table of docs/settings.md
    print(markdown_table(), end="")
