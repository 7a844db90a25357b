"""Kafka Connect: build/install the S3 Avro sink plugin and create its connector idempotently.

``qp stack up`` calls :func:`install_plugins` before starting Connect and :func:`ensure_connectors` once
Connect answers. The plugin is our own (``infra/connect/s3-avro-sink``, Java, Maven Central deps only):
Confluent's S3 sink is not on Maven Central, and Aiven's needs Confluent's Avro converter, which is not
either. Connector settings come from ``Settings`` and two environment variables:

- ``QP_SINK_FLUSH_SIZE`` (default 100): records per landed file;
- ``QP_SINK_ROTATE_INTERVAL_MS`` (default 2000): a file open this long is closed and uploaded (small files
  are fine: the daily feature build reads a day in one pass and rewrites its Iceberg partitions).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from qp_assets.redact import redact
from qp_assets.settings import PROJECT_ROOT, Settings, load_env

log = logging.getLogger(__name__)

PLUGIN_SOURCE = PROJECT_ROOT / "infra" / "connect" / "s3-avro-sink"
CONNECTORS_DIR = PROJECT_ROOT / "infra" / "connect" / "connectors"
PLUGIN_NAME = "qp-s3-avro-sink"
SINK_CONNECTOR = "qp-s3-avro-sink"


REST_TIMEOUT_S = 30.0  # one Connect REST request (PUT of a config can take a rebalance)


class ConnectError(RuntimeError):
    """The plugin could not be built, the connector is not running, or Connect's REST API did not answer."""


def rest(settings: Settings, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One bounded request to Connect's REST API; no answer within REST_TIMEOUT_S -> ConnectError naming it."""
    url = f"{settings.kafka_connect_url.rstrip('/')}{path}"
    try:
        return httpx.request(method, url, timeout=kwargs.pop("timeout", REST_TIMEOUT_S), **kwargs)
    except httpx.TransportError as exc:  # connect errors, timeouts, broken answers
        raise ConnectError(
            redact(f"Kafka Connect REST at {settings.kafka_connect_url}: {method} {path} failed: {exc!r}")
        ) from exc


def source_digest(source: Path = PLUGIN_SOURCE) -> str:
    """Hash of the plugin's pom and sources: the build cache key."""
    digest = hashlib.sha256()
    for path in sorted([source / "pom.xml", *(source / "src" / "main").rglob("*")]):
        if path.is_file():
            digest.update(str(path.relative_to(source)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def install_plugins(plugin_dir: Path, source: Path = PLUGIN_SOURCE) -> Path:
    """Build the sink plugin (only when its sources changed) and install it into ``plugin_dir/<name>/``."""
    target = plugin_dir / PLUGIN_NAME
    marker = target / ".source-digest"
    digest = source_digest(source)
    if marker.exists() and marker.read_text() == digest:
        return target
    log.info("building the S3 Avro sink plugin (%s)", source)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ConnectError("mvn not found on PATH: Maven is needed to build the Connect sink plugin")
    proc = subprocess.run(
        [mvn, "-B", "-q", "-DskipTests", "package"],
        cwd=source,
        capture_output=True,
        text=True,
        env={**os.environ, "MAVEN_OPTS": os.environ.get("MAVEN_OPTS", "-XX:TieredStopAtLevel=1")},
    )
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise ConnectError("building the sink plugin failed:\n" + "\n".join(tail))
    jars = [*(source / "target").glob(f"{PLUGIN_NAME}-*.jar"), *(source / "target" / "plugin").glob("*.jar")]
    staging = plugin_dir / f".{PLUGIN_NAME}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for jar in jars:
        if not jar.name.startswith(("kafka-", "connect-", "slf4j-")):  # Connect provides these
            shutil.copy2(jar, staging / jar.name)
    (staging / ".source-digest").write_text(digest)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    log.info("installed %d jars into %s", len(list(target.glob("*.jar"))), target)
    return target


def connector_config(settings: Settings, name: str = SINK_CONNECTOR) -> dict[str, str]:
    """The connector's config with endpoints rendered from ``settings``.

    Credentials are never rendered in: the template refers to them as ``${env:AWS_ACCESS_KEY_ID}`` /
    ``${env:AWS_SECRET_ACCESS_KEY}``, resolved inside the Connect worker by its EnvVarConfigProvider (the stack
    starts Connect with those two variables from ``settings``), so neither Connect's REST API nor its
    ``_connect-configs`` topic ever holds the secret. Registry basic auth likewise: with
    ``SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO`` set, the config says
    ``"schema.registry.basic.auth.user.info": "${env:SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO}"``; user info in
    ``SCHEMA_REGISTRY_URL`` is refused (ConnectError), since it would be readable over the REST API.
    """
    from qp_assets.redact import redact_url, strip_userinfo
    from qp_assets.streaming.serde import REGISTRY_USER_INFO_VAR, registry_user_info

    template = json.loads((CONNECTORS_DIR / f"{name}.json").read_text())
    registry_url = settings.schema_registry_url
    if strip_userinfo(registry_url) != registry_url:
        raise ConnectError(
            f"SCHEMA_REGISTRY_URL={redact_url(registry_url)} carries credentials, which the connector config "
            f"would expose over Connect's REST API; put them in {REGISTRY_USER_INFO_VAR}=user:password instead"
        )
    env = load_env()
    if registry_user_info() is not None:
        template["schema.registry.basic.auth.user.info"] = "${env:" + REGISTRY_USER_INFO_VAR + "}"
    values = {
        "bucket": settings.bucket,
        "s3_endpoint_url": settings.s3_endpoint_url,
        "aws_region": settings.aws_region,
        "schema_registry_url": registry_url,
        "flush_size": str(env.sink_flush_size),
        "rotate_interval_ms": str(env.sink_rotate_interval_ms),
    }
    rendered = {}
    for key, value in template.items():
        text = str(value)
        for name_, val in values.items():
            text = text.replace("{" + name_ + "}", str(val))
        rendered[key] = text
    return rendered


def connector_status(settings: Settings, name: str = SINK_CONNECTOR) -> dict[str, Any] | None:
    resp = rest(settings, "GET", f"/connectors/{name}/status", timeout=10)
    return None if resp.status_code == 404 else resp.raise_for_status().json()


def ensure_connectors(settings: Settings, timeout_s: float = 60.0) -> None:
    """Create or update every connector under infra/connect/connectors (PUT is idempotent); wait for RUNNING."""
    for path in sorted(CONNECTORS_DIR.glob("*.json")):
        name = path.stem
        config = connector_config(settings, name)
        resp = rest(settings, "PUT", f"/connectors/{name}/config", json=config)
        if resp.status_code >= 400:
            raise ConnectError(
                redact(f"connector {name}: Connect refused its config (HTTP {resp.status_code}): {resp.text}")
            )
        wait_running(settings, name, timeout_s)


def restart_connector(settings: Settings, name: str = SINK_CONNECTOR, *, only_failed: bool = True) -> int:
    """``POST /connectors/<name>/restart?includeTasks=true&onlyFailed=...``; returns the HTTP status."""
    params = {"includeTasks": "true", "onlyFailed": "true" if only_failed else "false"}
    status = rest(settings, "POST", f"/connectors/{name}/restart", params=params).status_code
    log.warning(
        "connector %s: asked Connect to restart it (only failed: %s) -> HTTP %d", name, only_failed, status
    )
    return status


def wait_running(
    settings: Settings,
    name: str = SINK_CONNECTOR,
    timeout_s: float = 60.0,
    *,
    unassigned_grace_s: float = 20.0,
) -> dict[str, Any]:
    """Wait until the connector and all its tasks are RUNNING, nudging Connect where it would wait by itself.

    - A FAILED connector or task is restarted once through the REST API (a broker crash can fail a task);
      if it FAILs again the task's trace is raised.
    - A connector or task still UNASSIGNED (or without tasks) after ``unassigned_grace_s`` is restarted
      through the REST API, at most every ``unassigned_grace_s``: after a broker crash the worker's own
      assignment can count as "lost" and wait for ``scheduled.rebalance.max.delay.ms`` (10 s in our worker
      config, 300 s by default).
    """
    start = time.monotonic()
    deadline = start + timeout_s
    status: dict[str, Any] | None = None
    restarted_failed: float | None = None  # when a FAILED connector/task was restarted
    last_nudge = start
    while time.monotonic() < deadline:
        status = connector_status(settings, name)
        if status:
            tasks = status.get("tasks", [])
            states = [status["connector"]["state"], *(t["state"] for t in tasks)]
            if status["connector"]["state"] == "RUNNING" and tasks and all(s == "RUNNING" for s in states):
                return status
            if "FAILED" in states:
                failed = [t for t in tasks if t.get("state") == "FAILED"] or [status["connector"]]
                if restarted_failed is not None and time.monotonic() - restarted_failed < 10:
                    pass  # the restart is asynchronous: the status may still show the old failure
                elif restarted_failed is not None:
                    trace = (failed[0].get("trace") or "").strip().splitlines()[:3]
                    what = f"task {failed[0]['id']}" if "id" in failed[0] else "connector"
                    raise ConnectError(
                        redact(f"connector {name} {what} FAILED again after a restart: {' | '.join(trace)}")
                    )
                else:
                    restart_connector(settings, name, only_failed=True)
                    restarted_failed = time.monotonic()
            elif (
                "UNASSIGNED" in states or not tasks
            ) and time.monotonic() - last_nudge >= unassigned_grace_s:
                restart_connector(settings, name, only_failed=False)
                last_nudge = time.monotonic()
        time.sleep(1)
    raise ConnectError(
        redact(f"connector {name} not RUNNING within {timeout_s:.0f} s (last status: {status})")
    )
