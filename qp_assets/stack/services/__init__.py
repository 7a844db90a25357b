"""The services of the local stack: how each is fetched, configured, started and probed.

One module per service (``seaweedfs``, ``kafka``, ``registry``, ``connect``, ``spark_connect``,
``pushgateway``, ``prometheus``), each defining one :class:`~qp_assets.stack.services.base.Service` as
``SERVICE``; this module is the registry (:data:`SERVICES`, in start order). What they share lives in
``base``. To add a service: a module with its ``SERVICE``, one line in :data:`_MODULES`, its ports in
docs/stack.md.

Ports come from the client-side endpoints in :class:`~qp_assets.settings.Settings` (e.g.
``KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092`` makes the stack start Kafka on 19092), so the stack always
listens where the clients connect. An endpoint whose host is not loopback is *external*: the stack does
not start that service and only probes it. Ports without a client endpoint have their own variables:
``QP_KAFKA_CONTROLLER_PORT`` (9093) and ``QP_REGISTRY_MANAGEMENT_PORT`` (8085). ``QP_PORT_OFFSET`` shifts every
default port at once (see docs/settings.md).
"""

from __future__ import annotations

from qp_assets.stack.services import (
    connect,
    kafka,
    prometheus,
    pushgateway,
    registry,
    seaweedfs,
    spark_connect,
)
from qp_assets.stack.services.base import Endpoint, Service, StackContext, java_executable
from qp_assets.stack.services.kafka import kafka_random_uuid
from qp_assets.stack.services.seaweedfs import s3_client

# Start order: object store -> Kafka -> registry -> Connect -> Spark Connect -> PushGateway -> Prometheus.
_MODULES = (seaweedfs, kafka, registry, connect, spark_connect, pushgateway, prometheus)
SERVICES: dict[str, Service] = {m.SERVICE.name: m.SERVICE for m in _MODULES}
SERVICE_ORDER: list[str] = list(SERVICES)


def describe(ctx: StackContext) -> dict[str, dict[str, object]]:
    """Machine-readable summary (name -> endpoint, local) used by status output."""
    return {
        name: {
            "endpoint": f"{svc.endpoint(ctx).host}:{svc.endpoint(ctx).port}",
            "local": svc.endpoint(ctx).local,
        }
        for name, svc in SERVICES.items()
    }


__all__ = [
    "SERVICES",
    "SERVICE_ORDER",
    "Endpoint",
    "Service",
    "StackContext",
    "describe",
    "java_executable",
    "kafka_random_uuid",
    "s3_client",
]
