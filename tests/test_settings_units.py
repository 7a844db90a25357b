"""Settings in one place: every variable the code reads is a field of ``qp_assets.settings.Env``, documented
in docs/settings.md, and validated at load with the variable named (unit, no services; < 1 s)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from qp_assets.settings import (
    PROJECT_ROOT,
    TOOL_VARIABLES,
    Env,
    Settings,
    SettingsError,
    load_env,
    markdown_table,
)

PACKAGE = PROJECT_ROOT / "qp_assets"
DOC = PROJECT_ROOT / "docs" / "settings.md"
#: A variable name as the code spells it: ours (QP_*) and the endpoint / credential families.
VARIABLE = re.compile(
    r"^(QP|KAFKA|SCHEMA_REGISTRY|S3|AWS|ICEBERG|SPARK|PUSHGATEWAY|PROMETHEUS)_[A-Z0-9_]*[A-Z0-9]$"
)
#: Literals of that form that are not variables (a marker line printed by the DagBag probe).
NOT_VARIABLES = {"QP_DAGBAG_JSON"}


def _environ_reads(path: Path) -> list[tuple[int, str]]:
    """(line, text) of each use of ``os.environ`` / ``os.getenv`` that is not a whole-environment copy for
    a child process (``dict(os.environ)``, ``{**os.environ}``) or a tool variable's."""
    source = path.read_text()
    tree = ast.parse(source)
    copies = set()  # id() of the os.environ nodes copied whole: dict(os.environ, ...) and {**os.environ, ...}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "dict"
            and node.args
        ):
            copies.add(id(node.args[0]))
        if isinstance(node, ast.Dict):
            copies.update(id(v) for k, v in zip(node.keys, node.values, strict=True) if k is None)
    found = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"
        ):
            continue
        if node.attr not in ("environ", "getenv") or id(node) in copies:
            continue
        line = source.splitlines()[node.lineno - 1]
        if any(f'"{var}"' in line for var in TOOL_VARIABLES):
            continue
        found.append((node.lineno, line.strip()))
    return found


def test_only_settings_reads_the_environment() -> None:
    """Outside qp_assets/settings.py no module reads a product variable from the environment."""
    offenders = [
        f"{path.relative_to(PROJECT_ROOT)}:{line}: {text}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "settings.py" or path.parent != PACKAGE
        for line, text in _environ_reads(path)
    ]
    assert not offenders, "read these through qp_assets.settings.load_env():\n" + "\n".join(offenders)


def test_every_variable_named_in_the_code_is_a_settings_field() -> None:
    """A variable-shaped string literal anywhere in qp_assets is a field of Env (or a tool's variable)."""
    known = set(Env.variables()) | set(TOOL_VARIABLES) | NOT_VARIABLES
    unknown = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and VARIABLE.match(node.value):
                if node.value not in known:
                    unknown.add(f"{node.value} ({path.relative_to(PROJECT_ROOT)})")
    assert not unknown, f"add to qp_assets.settings.Env (and docs/settings.md): {sorted(unknown)}"


def test_every_field_is_read_by_the_code() -> None:
    """Each Env field is used somewhere outside its declaration (the table lists nothing the code ignores)."""
    sources = (
        "\n".join(p.read_text() for p in PACKAGE.rglob("*.py") if p.name != "settings.py")
        + (PACKAGE / "settings.py")
        .read_text()
        .split(
            "# --------------------------------------------------------------------------------------- loading"
        )[1]
    )
    unread = [
        f.alias
        for name, f in Env.model_fields.items()
        if not re.search(rf"\.{name}\b|\"{name}\"|, {name}, ", sources)
    ]
    assert not unread, f"variables no code reads (remove them from Env): {unread}"


def test_docs_table_is_the_generated_one() -> None:
    text = DOC.read_text()
    assert markdown_table() in text, (
        "regenerate the table: python -m qp_assets.settings > /tmp/t; see docs/settings.md"
    )
    for var in TOOL_VARIABLES:
        assert f"`{var}`" in text


def test_a_bad_value_fails_at_load_naming_the_variable() -> None:
    cases = {
        "QP_PORT_OFFSET": ("lots", "QP_PORT_OFFSET='lots': Input should be a valid integer"),
        "QP_KAFKA_SECURITY": ("kerberos", "QP_KAFKA_SECURITY='kerberos' is not one of plaintext, scram"),
        "QP_REQUEST_SENSOR_WAIT_S": (
            "31",
            "QP_REQUEST_SENSOR_WAIT_S='31': Input should be less than or equal to 30",
        ),
        "QP_MAX_WALL_S": ("inf", "QP_MAX_WALL_S='inf': Input should be a finite number"),
        "QP_PARTITIONS_START": (
            "2026-13-01",
            "QP_PARTITIONS_START='2026-13-01' is neither first-landed, a YYYY-MM-DD date",
        ),
        "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": ("no-colon", "(value not shown): must be 'user:password'"),
    }
    for var, (value, message) in cases.items():
        with pytest.raises(SettingsError) as err:
            load_env({var: value})
        assert message in str(err.value)
        assert var == "QP_PORT_OFFSET" or value not in str(err.value) or not Env.is_secret(var)
    with pytest.raises(SettingsError) as err:  # a secret's value never appears
        load_env({"QP_SMTP_PORT": "0", "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "s3cr3t-no-colon"})
    assert "s3cr3t" not in str(err.value) and "QP_SMTP_PORT='0'" in str(err.value)


def test_defaults_and_overrides() -> None:
    env = load_env(
        {"QP_SPARK_CONNECT": "OFF", "QP_KAFKA_SECURITY": " SCRAM ", "QP_BUCKET": "", "QP_MAX_QUBITS": "30"}
    )
    assert (env.spark_connect, env.kafka_security, env.bucket, env.max_qubits, env.max_atoms) == (
        False, "scram", "local-vqe-results", 30, None)  # fmt: skip
    assert load_env({}).request_sensor_wait_s == 5 and load_env({}).registry_timeout_s == 10.0


def test_settings_resolve_the_local_stack_from_the_offset(monkeypatch) -> None:
    monkeypatch.setenv("QP_PORT_OFFSET", "1000")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:9")
    monkeypatch.delenv("SPARK_CONNECT_URL", raising=False)
    monkeypatch.delenv("QP_SPARK_CONNECT", raising=False)
    s = Settings.from_env()
    assert (s.kafka_bootstrap_servers, s.port_offset, s.spark_connect_url) == (
        "broker:9",
        1000,
        "sc://127.0.0.1:16002",
    )
    local = Settings.from_env(local_offset=500)
    assert (local.kafka_bootstrap_servers, local.port_offset) == ("127.0.0.1:9592", 500)
    assert "secret" not in repr(s)
