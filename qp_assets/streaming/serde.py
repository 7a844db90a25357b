"""Avro serialization in the Confluent wire format against the schema registry.

The registry is Apicurio's Confluent-compatible API (``/apis/ccompat/v7``). Each topic's value subject
(``<topic>-value``, TopicNameStrategy) gets its compatibility level set explicitly before the first
registration: BACKWARD by default, NONE only when ``QP_SCHEMA_PROFILE=dev``. A schema the registry
rejects as incompatible raises :class:`SchemaIncompatibleError` naming the subject and the reason.
"""

from __future__ import annotations

import io
import json
import struct
import threading
from collections.abc import Mapping
from typing import Any

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from qp_assets.redact import redact, strip_userinfo
from qp_assets.settings import load_env
from qp_assets.streaming.schemas import latest_version, major_incompatibilities, schema_text

PROFILE_COMPATIBILITY = {"prod": "BACKWARD", "dev": "NONE"}


class SchemaIncompatibleError(RuntimeError):
    """The registry refused a schema for a subject (compatibility check failed)."""


def compatibility_level() -> str:
    """BACKWARD unless ``QP_SCHEMA_PROFILE=dev`` (then NONE)."""
    return PROFILE_COMPATIBILITY[load_env().schema_profile]


def subject_for(topic: str) -> str:
    return f"{topic}-value"


SCHEMA_NOT_FOUND = 40403  # Confluent (and Apicurio ccompat) error code: "Schema <id> not found"


class RegistryUnavailableError(RuntimeError):
    """The schema registry did not answer in time, refused us (401/403/429) or failed (5xx): retry, never drop."""


def registry_timeout_s() -> float:
    """Seconds one registry HTTP request may take (``QP_REGISTRY_TIMEOUT_S``, default 10)."""
    return load_env().registry_timeout_s


REGISTRY_USER_INFO_VAR = "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"


def registry_user_info(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """Registry basic-auth ``(user, password)`` from ``SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO=user:password``.

    None when unset or empty; a value without ``:`` or with an empty user raises ValueError naming the
    variable (never its value).
    """
    raw = load_env(environ).registry_user_info
    if not raw:
        return None
    user, _sep, password = raw.partition(":")
    return user, password


def registry_auth_header(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{"Authorization": "Basic ..."}`` for plain HTTP calls to the registry, or ``{}`` without credentials."""
    import base64

    info = registry_user_info(environ)
    if info is None:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(f"{info[0]}:{info[1]}".encode()).decode()}


def registry_client(url: str, *, timeout_s: float | None = None) -> SchemaRegistryClient:
    """The one way to build a ``SchemaRegistryClient``: with a request timeout and bounded retries.

    Worst case for one call: (1 + 2 retries of 429/5xx answers) x timeout plus <= 2 s of backoff; a
    registry that accepts connections and never answers fails after one timeout (no retry on timeouts).
    Basic auth: ``SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO`` (it wins over user info in ``url``, which is then
    dropped); without it, user info in the URL (``http://user:password@host/...``) is used.
    """
    conf: dict[str, Any] = {
        "url": url,
        "timeout": timeout_s if timeout_s is not None else registry_timeout_s(),
        "max.retries": 2,
        "retries.wait.ms": 250,
        "retries.max.wait.ms": 1000,
    }
    info = registry_user_info()
    if info is not None:
        conf.update({"url": strip_userinfo(url), "basic.auth.user.info": f"{info[0]}:{info[1]}"})
    return SchemaRegistryClient(conf)


def is_registry_outage(exc: BaseException) -> bool:
    """True when the registry could not give an answer (transient), False for a genuinely bad payload.

    Transient: transport errors and timeouts, and every HTTP error except "schema not found" (404 with
    error code 40403) — 401/403 (credentials being rotated), 408/429 (throttled), 5xx, a 404 without the
    registry's error code (wrong URL, proxy) and malformed answers.
    """
    import httpx
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    if isinstance(exc, RegistryUnavailableError | httpx.TransportError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, SchemaRegistryError):
        return not (exc.http_status_code == 404 and exc.error_code == SCHEMA_NOT_FOUND)
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_registry_outage(cause)


def unavailable(url: str, what: str, exc: BaseException) -> RegistryUnavailableError:
    """A RegistryUnavailableError naming the registry, what we were doing and the underlying error
    (credentials redacted: the URL's password and any secret of the environment)."""
    status = getattr(exc, "http_status_code", None)
    if status in (401, 403):
        who = "no credentials set" if registry_user_info() is None else "check its user and password"
        return RegistryUnavailableError(redact(
            f"schema registry at {url} refused our credentials (HTTP {status}; {REGISTRY_USER_INFO_VAR}: {who}) "
            f"while {what}"
        ))  # fmt: skip
    return RegistryUnavailableError(redact(f"schema registry at {url} unavailable while {what}: {exc!r}"))


class Registry:
    """A registry client that registers each (subject, schema) once per process and caches the id."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = registry_client(url)
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
                        redact(
                            f"schema registry rejected the schema for subject {subject!r} "
                            f"(compatibility {self.compatibility(subject)}): {exc.error_message}"
                        )
                    ) from exc
                raise unavailable(self.url, f"registering {subject!r}", exc) from exc
            except Exception as exc:
                if is_registry_outage(exc):
                    raise unavailable(self.url, f"registering {subject!r}", exc) from exc
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

    A major from ``FIRST_CHECKED_MAJOR`` on is first checked against the previous major locally (FULL, Avro
    resolution; :class:`SchemaIncompatibleError` naming the fields, never spooled). The schema is then
    registered explicitly once (compatibility within the subject enforced by the registry); each value is then
    ``0x00 | schema id (4 bytes, big-endian) | Avro binary`` written by fastavro with the parsed schema, with
    no registry round trip per message.
    """

    def __init__(self, registry_url: str, topic: str, schema_name: str, version: int | None = None) -> None:
        self.topic = topic
        version = latest_version(schema_name) if version is None else version
        problems = major_incompatibilities(schema_name, version)
        if problems:  # a new major registers into an empty subject: the registry would accept anything
            raise SchemaIncompatibleError(
                f"schema {schema_name} v{version} is not compatible with v{version - 1} (checked before "
                f"registering {subject_for(topic)!r}): " + " | ".join(problems)
            )
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


class ValueDeserializer:
    """Confluent-framed Avro -> dict with the writer schema from the registry (topic-name subjects).

    The subject is always ``<topic>-value`` (explicit TopicNameStrategy): no association lookups, the same
    requests against Apicurio and Confluent (``GET /schemas/ids/<id>``, once per id). A registry that
    cannot answer raises :class:`RegistryUnavailableError` naming it; other errors mean a bad payload.
    """

    def __init__(self, registry_url: str, reader_schema: str | None = None) -> None:
        self.url = registry_url
        self.avro = AvroDeserializer(
            registry(registry_url).client,
            reader_schema,
            conf={"subject.name.strategy": topic_subject_name_strategy},
        )

    def __call__(self, topic: str, payload: bytes) -> Any:
        try:
            return self.avro(payload, SerializationContext(topic, MessageField.VALUE))
        except Exception as exc:
            if is_registry_outage(exc) and not isinstance(exc, RegistryUnavailableError):
                raise unavailable(self.url, f"decoding a record of {topic}", exc) from exc
            raise


def value_deserializer(registry_url: str, reader_schema: str | None = None) -> ValueDeserializer:
    """A deserializer using the writer schema from the registry (and ``reader_schema`` if given)."""
    return ValueDeserializer(registry_url, reader_schema)


def deserialize(deserializer: ValueDeserializer, topic: str, payload: bytes) -> dict[str, Any]:
    return deserializer(topic, payload)
