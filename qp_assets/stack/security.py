"""The local stack's authenticated profile: a SASL/SCRAM Kafka and a registry that requires basic auth.

Switched on per service by environment variables read by ``qp stack up`` (docs/security.md); switch on a
stopped stack (``qp stack down`` first), since a running service keeps the configuration it started with:

- ``QP_KAFKA_SECURITY=scram``: the broker's client listener is ``SASL_PLAINTEXT`` with ``SCRAM-SHA-512``
  only (inter-broker traffic too; the KRaft controller listener stays on loopback). The user
  ``KAFKA_SASL_USERNAME`` / ``KAFKA_SASL_PASSWORD`` is created when the storage is formatted; storage
  formatted for another (or no) user is refused with a StackError saying what to do. The Connect worker
  and its producer / consumer / admin clients authenticate as that user (``security.protocol``,
  ``sasl.mechanism``, ``sasl.jaas.config`` and the same three keys with the ``producer.``, ``consumer.`` and
  ``admin.`` prefixes). Every Python client does through
  :func:`qp_assets.streaming.kafka_config.client_config`.
- ``QP_REGISTRY_AUTH=basic``: Apicurio 3 requires HTTP basic auth on its APIs (Quarkus basic auth with
  one embedded user, role ``sr-admin``; no OIDC server) for ``SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO=user:password``,
  which every registry client (Python and the Java sink) sends. An unauthenticated request gets HTTP 401.

Files that hold a credential (``conf/kafka/server.properties``, ``conf/connect/connect-distributed.properties``,
``conf/registry/auth.properties``) are written 0600. Every error names the variable, never its value.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from qp_assets.stack.errors import StackError, stack_env

if TYPE_CHECKING:
    from qp_assets.stack.services import StackContext

SCRAM_MECHANISM = "SCRAM-SHA-512"
_SAFE_USER = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_JAAS = 'org.apache.kafka.common.security.scram.ScramLoginModule required username="{user}" password="{password}";'


def kafka_scram_enabled() -> bool:
    """True when ``QP_KAFKA_SECURITY=scram`` (StackError naming the variable for an unknown value)."""
    return stack_env().kafka_security == "scram"


def registry_auth_enabled() -> bool:
    """True when ``QP_REGISTRY_AUTH=basic`` (default ``none``)."""
    return stack_env().registry_auth == "basic"


def _checked(var: str, value: str, *, user: bool) -> str:
    """``value`` if usable in a properties file / JAAS line; StackError naming ``var`` (not the value)."""
    if user and not _SAFE_USER.match(value):
        raise StackError(f"{var} must be 1-64 characters of A-Z a-z 0-9 . _ - for the local stack")
    if not value or any(c in value for c in '"\\\n\r'):
        raise StackError(f"{var} must be non-empty without quotes, backslashes or newlines (value not shown)")
    return value


def scram_user() -> tuple[str, str]:
    """``(user, password)`` from ``KAFKA_SASL_USERNAME`` / ``KAFKA_SASL_PASSWORD`` (StackError if unset)."""
    env = stack_env()
    user, password = env.kafka_sasl_username or "", env.kafka_sasl_password or ""
    if not user or not password:
        raise StackError("QP_KAFKA_SECURITY=scram needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
    return _checked("KAFKA_SASL_USERNAME", user, user=True), _checked(
        "KAFKA_SASL_PASSWORD", password, user=False
    )


def registry_user() -> tuple[str, str]:
    """``(user, password)`` from ``SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO`` (StackError if unset or malformed)."""
    from qp_assets.streaming.serde import REGISTRY_USER_INFO_VAR, registry_user_info

    try:
        info = registry_user_info()
    except ValueError as exc:
        raise StackError(str(exc)) from None
    if info is None:
        raise StackError(f"QP_REGISTRY_AUTH=basic needs {REGISTRY_USER_INFO_VAR}=user:password")
    return (_checked(REGISTRY_USER_INFO_VAR + " (user)", info[0], user=True),
            _checked(REGISTRY_USER_INFO_VAR + " (password)", info[1], user=False))  # fmt: skip


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` with mode 0600 (created so, never world-readable in between)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)
    return path


# ------------------------------------------------------------------------------------------------- Kafka
def kafka_properties(ctx: StackContext, rendered: str) -> str:
    """``rendered`` server.properties, with the SCRAM listener lines appended under the SCRAM profile (later
    keys win in a Java properties file)."""
    if not kafka_scram_enabled():
        return rendered
    user, password = scram_user()
    kafka, ctl = ctx.kafka, ctx.kafka_controller_port
    host = kafka.host if kafka.local else "127.0.0.1"
    return rendered + "\n".join([
        "",
        "# QP_KAFKA_SECURITY=scram (qp_assets/stack/security.py): clients and brokers authenticate with SCRAM",
        f"listeners=SASL_PLAINTEXT://{host}:{kafka.port},CONTROLLER://127.0.0.1:{ctl}",
        f"advertised.listeners=SASL_PLAINTEXT://{host}:{kafka.port}",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "inter.broker.listener.name=SASL_PLAINTEXT",
        f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
        f"sasl.mechanism.inter.broker.protocol={SCRAM_MECHANISM}",
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
        + _JAAS.format(user=user, password=password),
        "",
    ])  # fmt: skip


def _scram_marker(ctx: StackContext) -> Path:
    return ctx.data / "kafka" / "scram-user.sha256"


def _scram_digest(user: str, password: str) -> str:
    return hashlib.sha256(f"{SCRAM_MECHANISM}\0{user}\0{password}".encode()).hexdigest()


def kafka_format_args(ctx: StackContext) -> list[str]:
    """Extra ``StorageTool format`` arguments: the SCRAM user, under the SCRAM profile (else none)."""
    if not kafka_scram_enabled():
        return []
    user, password = scram_user()
    return ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={password}]"]


def after_kafka_format(ctx: StackContext) -> None:
    """Remember which SCRAM user the storage was formatted with (a digest, never the password)."""
    if kafka_scram_enabled():
        write_private(_scram_marker(ctx), _scram_digest(*scram_user()) + "\n")


def check_kafka_storage(ctx: StackContext) -> None:
    """Under the SCRAM profile, refuse storage formatted for another user or password, or without SCRAM."""
    if not kafka_scram_enabled():
        return
    marker = _scram_marker(ctx)
    known = marker.read_text().strip() if marker.is_file() else None
    if known != _scram_digest(*scram_user()):
        why = (
            "without SCRAM users"
            if known is None
            else "for another KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD"
        )
        raise StackError(
            f"QP_KAFKA_SECURITY=scram: the Kafka storage under {ctx.data / 'kafka'} was formatted {why}; "
            f"stop the stack and delete that directory (its topics are lost), or use another QP_HOME"
        )


def kafka_probe_config() -> dict[str, str]:
    """Security keys for the stack's own Kafka probe (the client environment's, as every client)."""
    from qp_assets.streaming.kafka_config import security_config

    try:
        return security_config()
    except ValueError as exc:
        raise StackError(str(exc)) from None


# ----------------------------------------------------------------------------------------------- Connect
def connect_properties(rendered: str) -> str:
    """The worker's properties with the SCRAM client settings for the worker and its producer / consumer /
    admin clients appended, under the SCRAM profile."""
    if not kafka_scram_enabled():
        return rendered
    user, password = scram_user()
    lines = [
        "",
        "# QP_KAFKA_SECURITY=scram (qp_assets/stack/security.py): the worker and every client it creates",
    ]
    for prefix in ("", "producer.", "consumer.", "admin."):
        lines += [
            f"{prefix}security.protocol=SASL_PLAINTEXT",
            f"{prefix}sasl.mechanism={SCRAM_MECHANISM}",
            f"{prefix}sasl.jaas.config=" + _JAAS.format(user=user, password=password),
        ]
    return rendered + "\n".join(lines) + "\n"


def connect_env() -> dict[str, str]:
    """Variables the worker's EnvVarConfigProvider may resolve for connectors: the registry's user info."""
    from qp_assets.streaming.serde import REGISTRY_USER_INFO_VAR

    value = stack_env().registry_user_info
    return {REGISTRY_USER_INFO_VAR: value} if value else {}


# ---------------------------------------------------------------------------------------------- registry
def registry_jvm_options(ctx: StackContext) -> list[str]:
    """JVM options turning on basic auth under ``QP_REGISTRY_AUTH=basic``: the user goes to a 0600
    properties file loaded with ``-Dsmallrye.config.locations`` (never on the command line)."""
    if not registry_auth_enabled():
        return []
    user, password = registry_user()
    path = write_private(ctx.conf / "registry" / "auth.properties", "\n".join([
        "# QP_REGISTRY_AUTH=basic (qp_assets/stack/security.py)",
        "quarkus.http.auth.basic=true",
        "quarkus.security.users.embedded.enabled=true",
        "quarkus.security.users.embedded.plain-text=true",
        f"quarkus.security.users.embedded.users.{user}={password}",
        f"quarkus.security.users.embedded.roles.{user}=sr-admin",
        "",
    ]))  # fmt: skip
    return [f"-Dsmallrye.config.locations=file:{path}"]


def registry_check_auth(ctx: StackContext) -> None:
    """Under ``QP_REGISTRY_AUTH=basic``, a request without credentials must get 401 (else the running
    registry was started without authentication: StackError saying so)."""
    if not registry_auth_enabled():
        return
    url = ctx.settings.schema_registry_url.rstrip("/") + "/subjects"
    from qp_assets.redact import redact_url, strip_userinfo

    try:
        with urllib.request.urlopen(strip_userinfo(url), timeout=5) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        raise StackError(f"registry at {redact_url(url)} did not answer: {exc}") from None
    if status != 401:
        raise StackError(
            f"QP_REGISTRY_AUTH=basic but the registry at {strip_userinfo(url)} answered HTTP {status} without "
            "credentials: it was started without authentication; run 'qp stack restart registry'"
        )
