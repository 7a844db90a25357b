"""Avro serialization in the Confluent wire format against the schema registry.

The registry is Apicurio's Confluent-compatible API (``/apis/ccompat/v7``). Each topic's value subject
(``<topic>-value``, TopicNameStrategy) gets its compatibility level set explicitly before the first
registration: BACKWARD by default, NONE only when ``QP_SCHEMA_PROFILE=dev``. A schema the registry
rejects as incompatible raises :class:`SchemaIncompatibleError` naming the subject and the reason.
"""

from __future__ import annotations

import io
import json
import os
import struct
import threading
from typing import Any

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from qp_assets.streaming.schemas import schema_text

PROFILE_COMPATIBILITY = {"prod": "BACKWARD", "dev": "NONE"}


class SchemaIncompatibleError(RuntimeError):
    """The registry refused a schema for a subject (compatibility check failed)."""


def compatibility_level() -> str:
    """BACKWARD unless ``QP_SCHEMA_PROFILE=dev`` (then NONE)."""
    profile = os.environ.get("QP_SCHEMA_PROFILE", "prod").strip().lower() or "prod"
    if profile not in PROFILE_COMPATIBILITY:
        raise ValueError(f"QP_SCHEMA_PROFILE={profile!r} is not one of {', '.join(PROFILE_COMPATIBILITY)}")
    return PROFILE_COMPATIBILITY[profile]


def subject_for(topic: str) -> str:
    return f"{topic}-value"


class Registry:
    """A registry client that registers each (subject, schema) once per process and caches the id."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = SchemaRegistryClient({"url": url})
        self._ids: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def register(self, subject: str, schema_str: str) -> int:
        """Set the subject's compatibility (first time) and register ``schema_str``; return its id."""
        key = (subject, schema_str)
        with self._lock:
            if key in self._ids:
                return self._ids[key]
            level = compatibility_level()
            try:
                existing = self.client.get_subjects()
                if subject not in existing:
                    self.client.set_compatibility(subject_name=subject, level=level)
                schema_id = self.client.register_schema(subject, Schema(schema_str, "AVRO"))
            except SchemaRegistryError as exc:
                if exc.http_status_code == 409:
                    raise SchemaIncompatibleError(
                        f"schema registry rejected the schema for subject {subject!r} "
                        f"(compatibility {self.compatibility(subject)}): {exc.error_message}"
                    ) from exc
                raise
            self._ids[key] = schema_id
            return schema_id

    def compatibility(self, subject: str) -> str:
        try:
            return self.client.get_compatibility(subject)
        except SchemaRegistryError:
            return self.client.get_compatibility()


_REGISTRIES: dict[str, Registry] = {}


def registry(url: str) -> Registry:
    if url not in _REGISTRIES:
        _REGISTRIES[url] = Registry(url)
    return _REGISTRIES[url]


class ValueSerializer:
    """Serialize dicts for one topic with one schema version, in the Confluent wire format.

    The schema is registered explicitly once (compatibility enforced by the registry); each value is then
    ``0x00 | schema id (4 bytes, big-endian) | Avro binary`` written by fastavro with the parsed schema, with
    no registry round trip per message.
    """

    def __init__(self, registry_url: str, topic: str, schema_name: str, version: int | None = None) -> None:
        self.topic = topic
        self.schema_str = schema_text(schema_name, version)
        self.registry = registry(registry_url)
        self.schema_id = self.registry.register(subject_for(topic), self.schema_str)
        self._parsed = fastavro.parse_schema(json.loads(self.schema_str))
        self._header = b"\x00" + struct.pack(">I", self.schema_id)

    def __call__(self, value: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self._header)
        fastavro.schemaless_writer(buf, self._parsed, value)
        return buf.getvalue()


def value_deserializer(registry_url: str, reader_schema: str | None = None) -> AvroDeserializer:
    """A deserializer using the writer schema from the registry (and ``reader_schema`` if given)."""
    return AvroDeserializer(registry(registry_url).client, reader_schema)


def deserialize(deserializer: AvroDeserializer, topic: str, payload: bytes) -> dict[str, Any]:
    return deserializer(payload, SerializationContext(topic, MessageField.VALUE))
