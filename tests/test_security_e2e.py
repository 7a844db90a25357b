"""The authenticated stack profile end to end: SASL/SCRAM-SHA-512 Kafka + a registry that requires basic auth.

The module starts its own stack (``QP_KAFKA_SECURITY=scram``, ``QP_REGISTRY_AUTH=basic``) in a fresh runtime
directory at the suite's port offset + 300 (sharing the resolved jars), runs ``qp e2e --molecules H2`` on it
(request submit -> sensor -> runner -> result topic -> Connect -> S3 -> Iceberg, every client authenticated),
then checks that wrong credentials fail with one clear line naming the service and no credential, that
nothing unauthenticated gets in, and that no credential is in any log or world-readable file. The stack is
stopped and its directory deleted at the end. Credentials are random per run.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from qp_assets.settings import Settings, port_offset

pytestmark = [pytest.mark.services, pytest.mark.slow]
OFFSET_SHIFT = 300
ENDPOINT_VARS = ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "KAFKA_CONNECT_URL", "S3_ENDPOINT_URL",
                 "PUSHGATEWAY_URL", "PROMETHEUS_URL", "ICEBERG_CATALOG_URI", "ICEBERG_WAREHOUSE",
                 "QP_KAFKA_CONTROLLER_PORT", "QP_REGISTRY_MANAGEMENT_PORT", "QP_SEAWEEDFS_PORT_OFFSET",
                 "SPARK_CONNECT_URL", "SPARK_MASTER")  # fmt: skip
KAFKA_USER, KAFKA_PASSWORD = "qp-e2e", f"scram-{uuid.uuid4().hex[:12]}"
REGISTRY_USER, REGISTRY_PASSWORD = "qp-registry", f"reg-{uuid.uuid4().hex[:12]}"
SECRETS = (KAFKA_PASSWORD, REGISTRY_PASSWORD)


def qp(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qp_assets.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory):
    """(env, Settings) of a running authenticated stack; stopped and deleted afterwards."""
    source = Settings.from_env().runtime_dir
    home = tmp_path_factory.mktemp("secure-stack")
    (home / "lib").symlink_to((source / "lib").resolve(), target_is_directory=True)
    plugins = source / "connect-plugins"
    if plugins.is_dir():  # the sink plugin built by the suite's stack (rebuilt only if its sources differ)
        shutil.copytree(plugins, home / "connect-plugins", symlinks=True)
    env = {k: v for k, v in os.environ.items() if k not in ENDPOINT_VARS}
    env.update({
        "QP_HOME": str(home), "QP_PORT_OFFSET": str(port_offset() + OFFSET_SHIFT),
        "DAGSTER_HOME": str(home / "dagster_home"),
        "QP_KAFKA_SECURITY": "scram", "KAFKA_SASL_USERNAME": KAFKA_USER, "KAFKA_SASL_PASSWORD": KAFKA_PASSWORD,
        "QP_REGISTRY_AUTH": "basic", "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": f"{REGISTRY_USER}:{REGISTRY_PASSWORD}",
        "QP_KAFKA_DELIVERY_TIMEOUT_MS": "20000",
    })  # fmt: skip
    for var in ("KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM"):
        env.pop(var, None)
    started = time.monotonic()
    try:
        up = qp(env, "stack", "up", timeout=420)
        if up.returncode != 0:
            logs = "".join(
                f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                for p in (home / "logs").glob("*.log")
            )
            pytest.fail(f"secure stack did not start:\n{up.stdout[-2000:]}\n{up.stderr[-2000:]}\n{logs}")
        print(f"\n[secure] stack up in {time.monotonic() - started:.1f} s")
        offset = port_offset() + OFFSET_SHIFT
        yield env, Settings.from_env(local_offset=offset)
    finally:
        down = qp(env, "stack", "down", timeout=180)
        shutil.rmtree(home, ignore_errors=True)
        assert down.returncode == 0, down.stdout + down.stderr


def test_e2e_passes_with_every_client_authenticated(secure) -> None:
    env, settings = secure
    started = time.monotonic()
    run = qp(env, "e2e", "--molecules", "H2", "--landing-timeout", "180", timeout=600)
    print(f"[secure] qp e2e in {time.monotonic() - started:.1f} s\n{run.stdout[-1500:]}")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    lines = run.stdout.splitlines()
    assert any(line.startswith("day ") and "1 vqe_runner_job run(s), 1 result(s)" in line for line in lines)
    row = next(line.split() for line in lines if line.startswith("H2 "))
    assert row[1] == "-1.13727017" and row[2] == "-1.13727017" and row[-1] == "CPU", row
    assert "vqe_results=1" in run.stdout and "molecules=1" in run.stdout
    assert not any(secret in run.stdout + run.stderr for secret in SECRETS)


def test_operator_tools_work_on_the_secure_stack(secure) -> None:
    """The lag monitor (admin + consumer), the DLQ reader and the audit (Kafka + registry) authenticate too."""
    env, _settings = secure
    push = qp(env, "monitoring", "push-pipeline", "--days", "1", timeout=180)
    assert push.returncode == 0, push.stdout + push.stderr
    out = json.loads(push.stdout)
    assert out["errors"] == [] and out["pushed"] is True
    lag_keys = [k for k in out["kafka_lag"] if k.startswith("connect-qp-s3-avro-sink/vqe_result_v")]
    assert len(lag_keys) == 1, out["kafka_lag"]
    dlq = qp(env, "dlq", "list", "--json", timeout=120)
    assert dlq.returncode == 0 and dlq.stdout.strip() == "", dlq.stdout + dlq.stderr
    audit = qp(env, "audit", datetime.now(UTC).date().isoformat(), "--json", timeout=300)
    assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-3000:]
    assert not any(secret in push.stdout + dlq.stdout + audit.stdout + audit.stderr for secret in SECRETS)


def test_wrong_kafka_password_fails_clearly(secure) -> None:
    env, settings = secure
    started = time.monotonic()
    run = qp({**env, "KAFKA_SASL_PASSWORD": "wrong-kafka-pw-1"}, "request", "submit", "-m", "H2", timeout=120)
    elapsed = time.monotonic() - started
    print(f"[secure] wrong Kafka password refused in {elapsed:.1f} s (process start included)")
    assert run.returncode == 1, run.stdout + run.stderr
    assert elapsed < 10  # reported on the first refused login, not after the 10 s metadata timeout
    error = run.stderr.strip().splitlines()[-1]
    assert error.startswith(
        f"qp request submit: error: Kafka at {settings.kafka_bootstrap_servers} refused our credentials "
        f"(SASL user '{KAFKA_USER}', SCRAM-SHA-512; check KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD): "
    ), error
    assert "invalid credentials" in error and error.endswith("(0 of 1 request(s) published)")
    assert not any(s in run.stdout + run.stderr for s in (*SECRETS, "wrong-kafka-pw-1"))


def test_wrong_or_missing_registry_credentials_fail_clearly(secure) -> None:
    env, settings = secure
    run = qp({**env, "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": f"{REGISTRY_USER}:wrong-reg-pw-2"},
             "request", "submit", "-m", "H2", timeout=120)  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        f"qp request submit: error: schema registry at {settings.schema_registry_url} refused our credentials "
        "(HTTP 401; SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO: check its user and password) while registering "
        "'vqe.requests-value' (0 of 1 request(s) published)"
    )
    assert not any(s in run.stdout + run.stderr for s in (*SECRETS, "wrong-reg-pw-2"))
    anonymous = httpx.get(f"{settings.schema_registry_url}/subjects", timeout=10)
    assert anonymous.status_code == 401
    assert httpx.get(f"{settings.schema_registry_url}/subjects", timeout=10,
                     auth=(REGISTRY_USER, REGISTRY_PASSWORD)).status_code == 200  # fmt: skip


def test_an_unauthenticated_kafka_client_gets_nothing(secure) -> None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    _env, settings = secure
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers, "socket.timeout.ms": 3000})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)


def test_no_credential_in_any_log_and_credential_files_are_private(secure) -> None:
    env, settings = secure
    root = Path(env["QP_HOME"])
    for log in sorted((root / "logs").glob("*.log")):
        text = log.read_text(errors="replace")
        assert not any(secret in text for secret in SECRETS), log
    private = [root / "conf" / "kafka" / "server.properties", root / "conf" / "connect" / "connect-distributed.properties",
               root / "conf" / "registry" / "auth.properties"]  # fmt: skip
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    holders = {p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and p.stat().st_size < 1_000_000
               and any(s.encode() in p.read_bytes() for s in SECRETS)}  # fmt: skip
    assert holders == set(private)
    connector = httpx.get(f"{settings.kafka_connect_url}/connectors/qp-s3-avro-sink/config", timeout=10)
    assert (
        connector.json()["schema.registry.basic.auth.user.info"]
        == "${env:SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO}"
    )
    assert not any(secret in connector.text for secret in SECRETS)
