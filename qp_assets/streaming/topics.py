"""Topic naming: ``vqe_result_v<schema major>.<configuration suffix>``.

The suffix is derived only from the parameters that define a configuration (basis, mapper, ansatz,
backend method, exact vs shots, device actually used) — never from the seed, run id or iteration
counts — so the number of topics stays bounded by the number of configurations.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

REQUESTS_TOPIC = "vqe.requests"
REQUESTS_DLQ_TOPIC = "vqe.requests.dlq"
RESULTS_DLQ_TOPIC = "vqe_results.dlq"
RESULT_TOPIC_PREFIX = "vqe_result_v"
RESULT_TOPIC_REGEX = r"vqe_result_v[0-9]+\..*"
MAX_TOPIC_LENGTH = 249  # Kafka's limit
MAX_PART_LENGTH = 24

_MAPPER_SHORT = {"jordan_wigner": "jw", "parity": "parity", "bravyi_kitaev": "bk"}
_METHOD_SHORT = {"statevector": "sv", "matrix_product_state": "mps"}


def sanitize_part(value: Any) -> str:
    """Lower-case ``value`` and keep only Kafka's legal characters (``[a-z0-9_]``; ``-`` separates parts).

    ``*`` becomes ``s`` and ``+`` becomes ``p`` so ``6-31g*`` and ``6-31+g`` stay distinct; anything else
    illegal becomes ``_``. Parts longer than 24 characters are cut and suffixed with a short hash so
    different long values never collide.
    """
    text = str(value).strip().lower().replace("*", "s").replace("+", "p").replace("-", "")
    text = re.sub(r"[^a-z0-9_]", "_", text).strip("_") or "none"
    if len(text) > MAX_PART_LENGTH:
        digest = hashlib.sha256(text.encode()).hexdigest()[:6]
        text = f"{text[: MAX_PART_LENGTH - 7]}_{digest}"
    return text


def configuration_suffix(
    *, basis: str, mapper: str, ansatz: str, backend_method: str, shots: int | None, device: str
) -> str:
    """E.g. ``sto3g-jw-uccsd-sv-exact-cpu``."""
    parts = [
        sanitize_part(basis),
        _MAPPER_SHORT.get(mapper, sanitize_part(mapper)),
        sanitize_part(ansatz),
        _METHOD_SHORT.get(backend_method, sanitize_part(backend_method)),
        "exact" if shots is None else "shots",
        sanitize_part(device),
    ]
    return "-".join(parts)


def result_topic(record: dict[str, Any], major: int) -> str:
    """Topic of a VQE result record (``VQEResult.to_record()`` shape) for schema major version ``major``."""
    backend = record["backend"]
    suffix = configuration_suffix(
        basis=record["basis"],
        mapper=record["mapper"],
        ansatz=record["ansatz"]["name"],
        backend_method=backend["method"],
        shots=backend.get("shots"),
        device=backend.get("device_used") or backend.get("device_requested") or "cpu",
    )
    topic = f"{RESULT_TOPIC_PREFIX}{major}.{suffix}"
    if len(topic) > MAX_TOPIC_LENGTH:  # cannot happen with bounded parts; guard the invariant
        raise ValueError(f"topic name too long ({len(topic)} > {MAX_TOPIC_LENGTH}): {topic}")
    return topic
