"""Credentials stay out of messages (qp_assets.redact), and the auth settings of every client (no services)."""

from __future__ import annotations

import base64
import stat

import pytest

from qp_assets.redact import MASK, redact, redact_config, redact_url, strip_userinfo
from qp_assets.settings import Settings
from qp_assets.streaming.kafka_config import client_config, security_config
from qp_assets.streaming.serde import (
    RegistryUnavailableError,
    registry_auth_header,
    registry_client,
    registry_user_info,
    unavailable,
)

ENV = {
    "KAFKA_SASL_PASSWORD": "sasl-Pw-4711",
    "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "reg-user:reg-Pw-0815",
    "AWS_SECRET_ACCESS_KEY": "s3-Secret-42",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("schema registry at http://reg:pw@127.0.0.1:8081/apis/ccompat/v7 unavailable",
         "schema registry at http://reg:***@127.0.0.1:8081/apis/ccompat/v7 unavailable"),
        ("{'bootstrap.servers': 'h:1', 'sasl.password': 'x1'}", "{'bootstrap.servers': 'h:1', 'sasl.password': '***'}"),
        ('sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="u" password="p1";',
         'sasl.jaas.config=*** required username="u" password="***";'),
        ("basic.auth.user.info=u:p2 next", "basic.auth.user.info=*** next"),
        ('{"s3.secret.access.key": "k3", "s3.bucket.name": "b"}', '{"s3.secret.access.key": "***", "s3.bucket.name": "b"}'),
        ("quoting the env secret sasl-Pw-4711 and s3-Secret-42 and reg-Pw-0815", "quoting the env secret *** and *** and ***"),
        ("KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
         "KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
        ("nothing secret: http://127.0.0.1:8081/x user=alice", "nothing secret: http://127.0.0.1:8081/x user=alice"),
    ],
)  # fmt: skip
def test_redact_masks_url_passwords_secret_keys_and_environment_secrets(text: str, expected: str) -> None:
    assert redact(text, ENV) == expected
    assert redact(expected, ENV) == expected  # idempotent


def test_redact_helpers() -> None:
    assert redact_url("https://u:p%40ss@reg.example:443/a") == f"https://u:{MASK}@reg.example:443/a"
    assert strip_userinfo("http://u:p@h:1/x") == "http://h:1/x"
    assert strip_userinfo("http://h:1/x") == "http://h:1/x"
    assert redact_config({"sasl.password": "x", "sasl.username": "u", "url": "http://a:b@h", "n": 3, "token": ""}) == {
        "sasl.password": MASK, "sasl.username": "u", "url": f"http://a:{MASK}@h", "n": 3, "token": ""}  # fmt: skip
    assert redact(RuntimeError("boom")) == "boom"


def test_settings_repr_hides_the_s3_secret(monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-key-1")
    settings = Settings.from_env()
    assert settings.aws_secret_access_key == "very-secret-key-1"
    assert "very-secret-key-1" not in repr(settings)


def test_scram_profile_defaults_the_protocol_and_mechanism(monkeypatch) -> None:
    for var in ("KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM"):
        monkeypatch.delenv(var, raising=False)
    env = {"QP_KAFKA_SECURITY": "scram", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}
    assert security_config(env) == {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
                                    "sasl.username": "u", "sasl.password": "p"}  # fmt: skip
    assert security_config({**env, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})["security.protocol"] == "SASL_SSL"
    with pytest.raises(ValueError, match="needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"):
        security_config({"QP_KAFKA_SECURITY": "scram"})
    with pytest.raises(ValueError, match="QP_KAFKA_SECURITY='kerberos' is not one of plaintext, scram"):
        security_config({"QP_KAFKA_SECURITY": "kerberos"})
    monkeypatch.setenv("QP_KAFKA_SECURITY", "scram")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "u")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "p")
    assert client_config("h:1", **{"group.id": "g"}) == {
        "bootstrap.servers": "h:1", "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u", "sasl.password": "p", "group.id": "g"}  # fmt: skip


def test_registry_basic_auth_from_the_environment(monkeypatch) -> None:
    assert registry_user_info({}) is None and registry_auth_header({}) == {}
    env = {"SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "reg-user:pa:ss"}
    assert registry_user_info(env) == ("reg-user", "pa:ss")
    assert registry_auth_header(env) == {
        "Authorization": "Basic " + base64.b64encode(b"reg-user:pa:ss").decode()
    }
    for bad in ("no-colon-secret", ":pw", "user:"):
        with pytest.raises(ValueError) as info:
            registry_user_info({"SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": bad})
        assert (
            str(info.value)
            == "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO=(value not shown): must be 'user:password'"
        )
    monkeypatch.setenv("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "reg-user:reg-pw")
    client = registry_client("http://other:x@127.0.0.1:1/apis/ccompat/v7")
    assert client._rest_client.base_urls == ["http://127.0.0.1:1/apis/ccompat/v7"]
    assert client._rest_client.auth == ("reg-user", "reg-pw")


def test_registry_errors_name_the_registry_without_credentials(monkeypatch) -> None:
    monkeypatch.setenv("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "reg-user:reg-Pw-0815")
    err = unavailable("http://reg-user:reg-Pw-0815@127.0.0.1:1/apis", "registering 's-value'",
                      RuntimeError("401 for basic.auth.user.info=reg-user:reg-Pw-0815"))  # fmt: skip
    assert isinstance(err, RegistryUnavailableError)
    assert str(err) == (
        "schema registry at http://reg-user:***@127.0.0.1:1/apis unavailable while registering 's-value': "
        "RuntimeError('401 for basic.auth.user.info=***')"
    )


def test_connector_config_refers_to_the_registry_credentials_and_refuses_them_in_the_url(monkeypatch) -> None:
    from qp_assets.streaming.connect import ConnectError, connector_config

    monkeypatch.delenv("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", raising=False)
    plain = connector_config(Settings.from_env(local_offset=0))
    assert "schema.registry.basic.auth.user.info" not in plain
    monkeypatch.setenv("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "reg-user:reg-Pw-0815")
    config = connector_config(Settings.from_env(local_offset=0))
    assert config["schema.registry.basic.auth.user.info"] == "${env:SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO}"
    assert "reg-Pw-0815" not in str(config)
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", "http://reg-user:reg-Pw-0815@127.0.0.1:8081/apis/ccompat/v7")
    with pytest.raises(ConnectError) as info:
        connector_config(Settings.from_env())
    assert "reg-Pw-0815" not in str(info.value)
    assert str(info.value).startswith(
        "SCHEMA_REGISTRY_URL=http://reg-user:***@127.0.0.1:8081/apis/ccompat/v7 carries"
    )


def test_stack_scram_profile_renders_private_configs(monkeypatch, tmp_path) -> None:
    from qp_assets.stack import security
    from qp_assets.stack.errors import StackError
    from qp_assets.stack.services import StackContext
    from qp_assets.stack.services.connect import _connect_properties
    from qp_assets.stack.services.kafka import _kafka_properties

    monkeypatch.setenv("QP_HOME", str(tmp_path))
    monkeypatch.setenv("QP_PORT_OFFSET", "100")
    monkeypatch.delenv("QP_KAFKA_CONTROLLER_PORT", raising=False)
    monkeypatch.setenv("QP_KAFKA_SECURITY", "scram")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "qp-user")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "scram-Pw-1")
    ctx = StackContext(Settings.from_env(local_offset=100))
    kafka = _kafka_properties(ctx)
    text = kafka.read_text()
    assert stat.S_IMODE(kafka.stat().st_mode) == 0o600
    assert "listeners=SASL_PLAINTEXT://127.0.0.1:9192,CONTROLLER://127.0.0.1:9193" in text
    assert 'sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="qp-user" password="scram-Pw-1";' in text  # fmt: skip
    worker = _connect_properties(ctx)
    lines = worker.read_text().splitlines()
    assert stat.S_IMODE(worker.stat().st_mode) == 0o600
    for prefix in ("", "producer.", "consumer.", "admin."):
        assert (
            f"{prefix}security.protocol=SASL_PLAINTEXT" in lines
            and f"{prefix}sasl.mechanism=SCRAM-SHA-512" in lines
        )
    assert security.kafka_format_args(ctx) == [
        "--add-scram",
        "SCRAM-SHA-512=[name=qp-user,password=scram-Pw-1]",
    ]
    with pytest.raises(StackError, match="formatted without SCRAM users"):
        security.check_kafka_storage(ctx)
    security.after_kafka_format(ctx)
    security.check_kafka_storage(ctx)  # same user and password: fine
    assert "scram-Pw-1" not in (ctx.data / "kafka" / "scram-user.sha256").read_text()
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "another-pw")
    with pytest.raises(StackError, match="formatted for another KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD"):
        security.check_kafka_storage(ctx)
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", 'bad"quote')
    with pytest.raises(StackError) as info:
        security.scram_user()
    assert "bad" not in str(info.value) and "KAFKA_SASL_PASSWORD" in str(info.value)
    monkeypatch.setenv("QP_KAFKA_SECURITY", "")
    assert "SASL" not in _kafka_properties(ctx).read_text()


def test_stack_registry_basic_auth_options(monkeypatch, tmp_path) -> None:
    from qp_assets.stack import security
    from qp_assets.stack.errors import StackError
    from qp_assets.stack.services import StackContext

    monkeypatch.setenv("QP_HOME", str(tmp_path))
    ctx = StackContext(Settings.from_env(local_offset=100))
    monkeypatch.delenv("QP_REGISTRY_AUTH", raising=False)
    assert security.registry_jvm_options(ctx) == []
    monkeypatch.setenv("QP_REGISTRY_AUTH", "basic")
    monkeypatch.delenv("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", raising=False)
    with pytest.raises(StackError, match="QP_REGISTRY_AUTH=basic needs SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"):
        security.registry_jvm_options(ctx)
    monkeypatch.setenv("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "reg-user:reg-Pw-0815")
    options = security.registry_jvm_options(ctx)
    path = ctx.conf / "registry" / "auth.properties"
    assert options == [f"-Dsmallrye.config.locations=file:{path}"]
    assert "reg-Pw-0815" not in " ".join(options)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "quarkus.security.users.embedded.users.reg-user=reg-Pw-0815" in path.read_text().splitlines()
    monkeypatch.setenv("QP_REGISTRY_AUTH", "oidc")
    with pytest.raises(StackError, match="QP_REGISTRY_AUTH='oidc' is not one of none, basic"):
        security.registry_jvm_options(ctx)


def test_every_kafka_client_of_ours_takes_the_shared_client_config() -> None:
    """No module of qp_assets or benchmarks builds a librdkafka config by hand (the stack's probe adds the
    security config explicitly); every client goes through kafka_config.client_config."""
    from qp_assets.settings import PROJECT_ROOT

    allowed = {
        PROJECT_ROOT / "qp_assets/streaming/kafka_config.py",
        PROJECT_ROOT / "qp_assets/stack/services/kafka.py",
    }
    by_hand = [
        str(path.relative_to(PROJECT_ROOT))
        for folder in ("qp_assets", "benchmarks")
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py"))
        if path not in allowed and '"bootstrap.servers"' in path.read_text()
    ]
    assert by_hand == []
    probe = (PROJECT_ROOT / "qp_assets/stack/services/kafka.py").read_text()
    assert probe.count('"bootstrap.servers"') == 1 and "**security.kafka_probe_config()" in probe
