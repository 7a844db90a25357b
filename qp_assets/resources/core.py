"""Resource classes (see package doc). No network access happens at construction time."""

from __future__ import annotations

import dataclasses
import smtplib
from email.message import EmailMessage
from typing import Any

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from qp_assets.landing import RAW_PREFIX
from qp_assets.settings import Env, Settings, load_env
from qp_assets.streaming.topics import REQUESTS_TOPIC


class KafkaResource(ConfigurableResource):
    """Kafka brokers plus the request topic the sensor watches."""

    bootstrap_servers: str = Field(description="host:port[,host:port] of the brokers")
    requests_topic: str = Field(default=REQUESTS_TOPIC, description="topic of VQE requests")
    timeout_s: float = Field(default=10.0, description="metadata / watermark timeout in seconds")

    def settings(self) -> Settings:
        return dataclasses.replace(Settings.from_env(), kafka_bootstrap_servers=self.bootstrap_servers)

    def watermarks(self, topic: str | None = None) -> dict[int, tuple[int, int]]:
        """Partition -> (low, high) watermark offsets of ``topic`` (no records are read)."""
        from qp_assets.sensors.kafka_offsets import read_watermarks

        return read_watermarks(self.bootstrap_servers, topic or self.requests_topic, self.timeout_s)

    def wait_for_new_offsets(
        self, topic: str, next_offsets: dict[int, int], wait_s: float
    ) -> dict[int, tuple[int, int]]:
        """Watermarks as soon as ``topic`` holds offsets beyond ``next_offsets``, else after ``wait_s``."""
        from qp_assets.sensors.kafka_offsets import wait_for_new_offsets

        return wait_for_new_offsets(
            self.bootstrap_servers, topic, next_offsets, wait_s, timeout_s=self.timeout_s
        )

    def offsets_at_time(self, topic: str, partitions: list[int], timestamp_ms: int) -> dict[int, int]:
        """Partition -> first offset stamped at or after ``timestamp_ms`` (the end when none)."""
        from qp_assets.sensors.kafka_offsets import offsets_at_time

        return offsets_at_time(self.bootstrap_servers, topic, partitions, timestamp_ms, self.timeout_s)


class SchemaRegistryResource(ConfigurableResource):
    """Confluent-compatible schema registry (Apicurio's ``/apis/ccompat/v7`` locally)."""

    url: str = Field(description="base URL of the Confluent-compatible API")
    timeout_s: float = Field(default=10.0, description="seconds one registry HTTP request may take")

    def client(self) -> Any:
        """A ``SchemaRegistryClient`` with a request timeout (built by the one factory, never bare)."""
        from qp_assets.streaming.serde import registry_client

        return registry_client(self.url, timeout_s=self.timeout_s)


class BoundedS3Resource(ConfigurableResource):
    """The S3 client of sensors and assets, with connect/read timeouts (botocore's defaults: 60 s each, x5).

    Field names follow dagster-aws's ``S3Resource`` (run config written for it still applies), but the class
    is ours: importing ``dagster_aws`` costs about 1 s in every process that loads the definitions (the code
    server, each run worker), which is on the path of every request's latency. An S3 endpoint that
    accepts connections and never answers fails a sensor tick or op after at most
    ``max_attempts * 2 * read_timeout_s`` (measured; botocore reconnects once per attempt), not 10 minutes.
    """

    endpoint_url: str | None = Field(default=None, description="S3 endpoint URL (None: AWS)")
    region_name: str | None = Field(default=None, description="S3 region")
    aws_access_key_id: str | None = Field(default=None, description="access key (None: boto3's lookup)")
    aws_secret_access_key: str | None = Field(default=None, description="secret key (None: boto3's lookup)")
    aws_session_token: str | None = Field(default=None, description="session token of temporary credentials")
    max_attempts: int = Field(default=3, ge=1, description="attempts per call (botocore standard retries)")
    connect_timeout_s: float = Field(default=5.0, description="seconds to establish a connection to S3")
    read_timeout_s: float = Field(default=30.0, description="seconds to wait for bytes of an S3 answer")

    def get_client(self) -> Any:
        """A path-style boto3 S3 client (see :func:`qp_assets.s3.make_client`)."""
        from qp_assets.s3 import make_client

        return make_client(
            self.endpoint_url,
            self.aws_access_key_id,
            self.aws_secret_access_key,
            self.region_name,
            aws_session_token=self.aws_session_token,
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
            max_attempts=self.max_attempts,
        )


class SparkResource(ConfigurableResource):
    """SparkSession factory over ``qp_assets.features.spark.get_spark_session``: a client of the stack's
    Spark Connect server when it runs, else an in-process Spark (local[*] or spark://)."""

    master: str = Field(description="Spark master URL: local[*] or spark://host:7077")
    sqlite_busy_timeout_ms: int = Field(
        default=60000, description="how long a write waits for a busy SQLite Iceberg catalog (milliseconds)"
    )

    def get_session(self, settings: Settings | None = None) -> Any:
        from qp_assets.features.spark import get_spark_session, is_remote

        settings = settings or Settings.from_env()
        _drop_dead_session()
        session = get_spark_session(dataclasses.replace(settings, spark_master=self.master), self.master)
        if "sqlite" in settings.iceberg_catalog_uri and not is_remote(session):  # the server sets its own
            # The embedded SQLite catalog has one writer at a time: wait for the lock (ms) instead of
            # failing at once. Read when the catalog is first loaded in this session (lazily).
            session.conf.set(
                f"spark.sql.catalog.{settings.iceberg_catalog_name}.jdbc.busy_timeout",
                str(self.sqlite_busy_timeout_ms),
            )
        return session


def _drop_dead_session() -> None:
    """Forget an active SparkSession whose JVM is gone (e.g. killed), so a retry starts a fresh one."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    try:
        active = SparkSession.getActiveSession()
        if active is None or type(active).__module__.startswith("pyspark.sql.connect"):
            return  # Spark Connect sessions are checked (and replaced) by features.spark.remote_session
        active.sparkContext._jsc.sc().isStopped()
        return
    except Exception:  # py4j cannot reach the JVM: reset pyspark's process-wide singletons
        SparkSession._instantiatedSession = None
        SparkSession._activeSession = None
        SparkContext._active_spark_context = None
        SparkContext._gateway = None
        SparkContext._jvm = None


class IcebergCatalogResource(ConfigurableResource):
    """The Iceberg SQL/JDBC catalog shared by Spark and PyIceberg, plus the S3 endpoint of its warehouse."""

    catalog_name: str
    catalog_uri: str
    warehouse: str
    s3_endpoint_url: str
    aws_access_key_id: str
    aws_secret_access_key: str
    aws_region: str = "us-east-1"
    namespace: str = Field(default="quantum_features", description="Iceberg namespace of the feature tables")

    def settings(self) -> Settings:
        return dataclasses.replace(
            Settings.from_env(),
            iceberg_catalog_name=self.catalog_name,
            iceberg_catalog_uri=self.catalog_uri,
            iceberg_warehouse=self.warehouse,
            s3_endpoint_url=self.s3_endpoint_url,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_region=self.aws_region,
        )

    def catalog(self) -> Any:
        from qp_assets.features.catalog import sql_catalog

        return sql_catalog(self.settings())


class LandingResource(ConfigurableResource):
    """Where Kafka Connect lands raw results: ``s3://<bucket>/<raw_prefix><topic>/year=/month=/day=/hour=/``."""

    bucket: str
    raw_prefix: str = Field(default=RAW_PREFIX, description="key prefix of the topic folders (ends with /)")

    def raw_root(self) -> str:
        """``s3a://<bucket>/<raw_prefix>`` without trailing slash (what ``build_days(raw_root=...)`` takes)."""
        return f"s3a://{self.bucket}/{self.raw_prefix.rstrip('/')}"


class PushGatewayResource(ConfigurableResource):
    """Prometheus PushGateway (host:port or URL)."""

    url: str

    def settings(self) -> Settings:
        return dataclasses.replace(Settings.from_env(), pushgateway_url=self.url)


class SmtpResource(ConfigurableResource):
    """Plain SMTP relay for run alerts (STARTTLS and login only when configured)."""

    host: str = "127.0.0.1"
    port: int = 25
    sender: str = "qp-dagster@localhost"
    recipients: str = Field(default="qp-alerts@localhost", description="comma-separated addresses")
    starttls: bool = False
    username: str = ""
    password: str = ""
    timeout_s: float = 10.0

    def send(self, subject: str, body: str) -> None:
        """Send one plain-text mail to every recipient; raises on SMTP errors."""
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipient_list())
        msg["Subject"] = subject
        msg.set_content(body)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self.username:
                    smtp.login(self.username, self.password)
                smtp.send_message(msg)
        except (TimeoutError, smtplib.SMTPServerDisconnected) as exc:  # each socket operation: <= timeout_s
            if not isinstance(exc, TimeoutError) and "timed out" not in str(exc):
                raise
            raise TimeoutError(
                f"SMTP server {self.host}:{self.port} did not answer within {self.timeout_s:g} s ({exc})"
            ) from exc

    def recipient_list(self) -> list[str]:
        return [r.strip() for r in self.recipients.split(",") if r.strip()]


def _secret(env: Env, name: str) -> Any:
    """``EnvVar`` of the secret field ``name`` of ``env`` when its variable is set (Dagster's UI then shows
    the variable's name, never the value), else the field's value."""
    return EnvVar(Env.model_fields[name].alias) if name in env.model_fields_set else getattr(env, name)


def default_resources(settings: Settings | None = None) -> dict[str, Any]:
    """The resource dict of the Definitions (keys are the names assets, ops and sensors ask for), built from
    :class:`qp_assets.settings.Settings` (endpoints) and :class:`qp_assets.settings.Env` (alert mail); the
    variables are listed in docs/settings.md."""
    s = settings or Settings.from_env()
    env = load_env()
    s3_secret = _secret(env, "aws_secret_access_key") if settings is None else s.aws_secret_access_key
    return {
        "kafka": KafkaResource(bootstrap_servers=s.kafka_bootstrap_servers),
        "schema_registry": SchemaRegistryResource(
            url=s.schema_registry_url, timeout_s=env.registry_timeout_s
        ),
        "s3": BoundedS3Resource(
            max_attempts=3,
            endpoint_url=s.s3_endpoint_url,
            aws_access_key_id=s.aws_access_key_id,
            aws_secret_access_key=s3_secret,
            region_name=s.aws_region,
        ),
        "landing": LandingResource(bucket=s.bucket),
        "spark": SparkResource(master=s.spark_master),
        "iceberg": IcebergCatalogResource(
            catalog_name=s.iceberg_catalog_name,
            catalog_uri=s.iceberg_catalog_uri,
            warehouse=s.iceberg_warehouse,
            s3_endpoint_url=s.s3_endpoint_url,
            aws_access_key_id=s.aws_access_key_id,
            aws_secret_access_key=s3_secret,
            aws_region=s.aws_region,
        ),
        "pushgateway": PushGatewayResource(url=s.pushgateway_url),
        "smtp": smtp_resource(env),
    }


def smtp_resource(env: Env | None = None, timeout_s: float = 10.0) -> SmtpResource:
    """The alert mailer of ``env`` (default: the current environment's ``QP_SMTP_*`` / ``QP_ALERT_*``)."""
    env = env or load_env()
    return SmtpResource(
        host=env.smtp_host or "127.0.0.1",
        port=env.smtp_port,
        sender=env.alert_from,
        recipients=env.alert_to,
        username=env.smtp_user,
        password=_secret(env, "smtp_password"),
        timeout_s=timeout_s,
    )
