"""Dagster resources: thin ``ConfigurableResource`` wrappers over the platform's service clients.

Every resource can turn its fields back into a :class:`qp_assets.settings.Settings` (``settings()``) so the
plain modules (streaming, features, monitoring) are called exactly as they are outside Dagster.
``default_resources()`` builds the resource dict of the Definitions: a field is an ``EnvVar`` when its
environment variable is set (so the UI shows where it came from) and the local-stack default otherwise.
"""

from __future__ import annotations

from qp_assets.resources.core import (
    IcebergCatalogResource,
    KafkaResource,
    PushGatewayResource,
    SchemaRegistryResource,
    SmtpResource,
    SparkResource,
    default_resources,
)

__all__ = [
    "IcebergCatalogResource",
    "KafkaResource",
    "PushGatewayResource",
    "SchemaRegistryResource",
    "SmtpResource",
    "SparkResource",
    "default_resources",
]
