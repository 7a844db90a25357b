"""Apicurio Registry 3 (Confluent-compatible API at ``/apis/ccompat/v7``), H2 file storage."""

from __future__ import annotations

from pathlib import Path

from qp_assets.stack import security
from qp_assets.stack.errors import StackError
from qp_assets.stack.services.base import (
    FAST_START_JIT,
    INFRA,
    Service,
    StackContext,
    http_ok,
    java_executable,
    jvm_extra_opts,
)


def _registry_jar(ctx: StackContext) -> Path:
    jars = sorted((ctx.lib / "registry").rglob("quarkus-run.jar"))
    if not jars:
        raise StackError(f"quarkus-run.jar not found under {ctx.lib / 'registry'}; run 'qp stack fetch'")
    return jars[0]


def _registry_command(ctx: StackContext) -> list[str]:
    db = ctx.data_dir("registry") / "registry"
    reg = ctx.registry
    tmp = ctx.data_dir("registry", "tmp")
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
    return http_ok(f"{base}/subjects", headers=registry_auth_header())


SERVICE = Service(
    name="registry",
    ports=lambda c: [c.registry.port, c.registry_management_port],
    maven_pom=INFRA / "registry" / "pom.xml",
    maven_goal="unpack-dependencies",  # a tar.gz server distribution
    command=_registry_command,
    probe=_registry_probe,
    after_ready=security.registry_check_auth,
    start_timeout=150,
    stop_grace=15,
)
