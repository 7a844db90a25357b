"""The local service stack behind ``qp stack``: SeaweedFS, Kafka, Apicurio registry, Kafka Connect,
PushGateway and Prometheus as plain processes on 127.0.0.1 (see docs/stack.md).

Public API: ``ensure_up(services=None) -> Settings`` (idempotent), ``down``, ``status``, ``fetch``;
``qp_assets.stack.maven.resolve_pom(pom, dest)`` for cached Maven resolution.
"""

from __future__ import annotations

from qp_assets.stack.errors import StackError, UnknownServiceError
from qp_assets.stack.launcher import down, ensure_up, fetch, our_process_groups, restart, status
from qp_assets.stack.services import SERVICE_ORDER

__all__ = [
    "SERVICE_ORDER",
    "StackError",
    "UnknownServiceError",
    "down",
    "ensure_up",
    "fetch",
    "our_process_groups",
    "restart",
    "status",
]
