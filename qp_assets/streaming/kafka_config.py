"""librdkafka client configuration, including security settings for real clusters.

Security options come from the environment and are passed through unchanged, so the same code talks to
the local PLAINTEXT broker and to SASL/SSL clusters:

=============================== ==================================================
``KAFKA_SECURITY_PROTOCOL``     PLAINTEXT (default) | SSL | SASL_PLAINTEXT | SASL_SSL
``KAFKA_SASL_MECHANISM``        PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
``KAFKA_SASL_USERNAME``         SASL user
``KAFKA_SASL_PASSWORD``         SASL password
``KAFKA_SSL_CA_LOCATION``       CA bundle (PEM) to verify the brokers
``KAFKA_SSL_CERTIFICATE_LOCATION`` / ``KAFKA_SSL_KEY_LOCATION`` / ``KAFKA_SSL_KEY_PASSWORD``  mTLS
=============================== ==================================================

``QP_KAFKA_SECURITY=scram`` (the local stack's SCRAM profile, see docs/security.md) makes
``SASL_PLAINTEXT`` + ``SCRAM-SHA-512`` the defaults of the first two, so only the user name and password
need to be set. Errors name the variable, never a password.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qp_assets.settings import load_env

#: :class:`qp_assets.settings.Env` field -> librdkafka key.
_ENV_TO_LIBRDKAFKA = {
    "kafka_security_protocol": "security.protocol",
    "kafka_sasl_mechanism": "sasl.mechanism",
    "kafka_sasl_username": "sasl.username",
    "kafka_sasl_password": "sasl.password",
    "kafka_ssl_ca_location": "ssl.ca.location",
    "kafka_ssl_certificate_location": "ssl.certificate.location",
    "kafka_ssl_key_location": "ssl.key.location",
    "kafka_ssl_key_password": "ssl.key.password",
}
VALID_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
VALID_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def security_config(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """librdkafka security keys from the environment; raises ValueError naming a bad variable."""
    env = load_env(environ)
    conf = {key: getattr(env, name) for name, key in _ENV_TO_LIBRDKAFKA.items() if getattr(env, name)}
    if env.kafka_security == "scram":
        conf.setdefault("security.protocol", "SASL_PLAINTEXT")
        conf.setdefault("sasl.mechanism", "SCRAM-SHA-512")
    protocol = conf.get("security.protocol", "PLAINTEXT").upper()
    if protocol not in VALID_PROTOCOLS:
        raise ValueError(f"KAFKA_SECURITY_PROTOCOL={protocol!r} is not one of {', '.join(VALID_PROTOCOLS)}")
    mechanism = conf.get("sasl.mechanism")
    if mechanism and mechanism.upper() not in VALID_MECHANISMS:
        raise ValueError(f"KAFKA_SASL_MECHANISM={mechanism!r} is not one of {', '.join(VALID_MECHANISMS)}")
    if protocol.startswith("SASL") and not (conf.get("sasl.username") and conf.get("sasl.password")):
        raise ValueError(
            f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
        )
    return conf


class AuthFailureWatch:
    """An ``error_cb`` for a client config that remembers SASL/SSL authentication failures.

    librdkafka reports a refused login only through ``error_cb`` / its log (the failing call itself says
    "Broker transport failure"); :meth:`describe` turns what was seen into one message naming the brokers,
    the mechanism and the user (never a password), or None.
    """

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, err: Any) -> None:
        from confluent_kafka import KafkaError

        if err.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
            self.errors.append(err.str())

    def describe(self, bootstrap_servers: str, environ: Mapping[str, str] | None = None) -> str | None:
        if not self.errors:
            return None
        from qp_assets.redact import redact

        conf = security_config(environ)
        who = f"SASL user {conf['sasl.username']!r}, {conf.get('sasl.mechanism', 'PLAIN')}" if "sasl.username" in conf else (
            f"security.protocol {conf.get('security.protocol', 'PLAINTEXT')}"
        )  # fmt: skip
        return redact(
            f"Kafka at {bootstrap_servers} refused our credentials ({who}; check KAFKA_SASL_USERNAME / "
            f"KAFKA_SASL_PASSWORD): {self.errors[-1]}"
        )


def client_config(bootstrap_servers: str, **overrides: Any) -> dict[str, Any]:
    """Base config for any confluent-kafka client: bootstrap + security from the environment + overrides."""
    return {"bootstrap.servers": bootstrap_servers, **security_config(), **overrides}
