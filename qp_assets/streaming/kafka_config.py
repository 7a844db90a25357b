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
"""

from __future__ import annotations

import os
from typing import Any

_ENV_TO_LIBRDKAFKA = {
    "KAFKA_SECURITY_PROTOCOL": "security.protocol",
    "KAFKA_SASL_MECHANISM": "sasl.mechanism",
    "KAFKA_SASL_USERNAME": "sasl.username",
    "KAFKA_SASL_PASSWORD": "sasl.password",
    "KAFKA_SSL_CA_LOCATION": "ssl.ca.location",
    "KAFKA_SSL_CERTIFICATE_LOCATION": "ssl.certificate.location",
    "KAFKA_SSL_KEY_LOCATION": "ssl.key.location",
    "KAFKA_SSL_KEY_PASSWORD": "ssl.key.password",
}
VALID_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
VALID_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def security_config(environ: dict[str, str] | None = None) -> dict[str, str]:
    """librdkafka security keys from the environment; raises ValueError naming a bad variable."""
    env = os.environ if environ is None else environ
    conf = {key: env[var] for var, key in _ENV_TO_LIBRDKAFKA.items() if env.get(var)}
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


def client_config(bootstrap_servers: str, **overrides: Any) -> dict[str, Any]:
    """Base config for any confluent-kafka client: bootstrap + security from the environment + overrides."""
    return {"bootstrap.servers": bootstrap_servers, **security_config(), **overrides}
