"""Finding and reading the landed raw Avro files of a day.

Layout (the Kafka Connect sink's): ``<raw_root>/<topic>/year=YYYY/month=MM/day=DD/hour=HH/<file>``.
``raw_root`` is ``s3a://<bucket>/<prefix>raw/topics`` (listed with boto3 against the configured S3
endpoint) or ``file:///...`` (listed on the local disk). Files are read with spark-avro using the v3
contract plus the result-reuse fields as reader schema so older writer schemas (v1/v2) land in the same shape.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from qp_assets.features.golden import SCHEMA_PATH
from qp_assets.landing import RAW_PREFIX, day_suffix
from qp_assets.s3 import s3_client
from qp_assets.settings import Settings

log = logging.getLogger(__name__)

AVRO_MAGIC = b"Obj\x01"


def default_raw_root(settings: Settings) -> str:
    """``s3a://<bucket>/raw/topics``: where Kafka Connect lands the results."""
    return f"s3a://{settings.bucket}/{RAW_PREFIX.rstrip('/')}"


def _visible(name: str) -> bool:
    return not name.startswith((".", "_")) and not name.endswith((".tmp", ".crc"))


def list_day_files(raw_root: str, day: date, settings: Settings | None = None) -> list[str]:
    """URIs of every landed file of ``day`` across all topics (sorted; hidden/temp files skipped)."""
    parts = urlsplit(raw_root)
    suffix = day_suffix(day)
    if parts.scheme == "file" or parts.scheme == "":
        root = Path(unquote(parts.path))
        if not root.is_dir():
            return []
        found = []
        for topic_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            day_dir = topic_dir / suffix
            if day_dir.is_dir():
                found += [
                    f"file://{p.resolve()}"
                    for p in sorted(day_dir.rglob("*"))
                    if p.is_file() and _visible(p.name)
                ]
        return found
    if parts.scheme not in ("s3a", "s3"):
        raise ValueError(
            f"raw_root: unsupported scheme {parts.scheme!r} in {raw_root!r} (use s3a:// or file://)"
        )
    client = s3_client(settings or Settings.from_env())
    bucket = parts.netloc
    prefix = parts.path.lstrip("/").rstrip("/") + "/"
    topics: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        topics += [cp["Prefix"] for cp in page.get("CommonPrefixes", [])]
    found = []
    for topic_prefix in sorted(topics):
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=topic_prefix + suffix
        ):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if _visible(key.rsplit("/", 1)[-1]):
                    found.append(f"s3a://{bucket}/{key}")
    return sorted(found)


def _read_head(uri: str, settings: Settings | None) -> bytes:
    parts = urlsplit(uri)
    if parts.scheme == "file":
        with open(unquote(parts.path), "rb") as fh:
            return fh.read(4)
    client = s3_client(settings or Settings.from_env())
    obj = client.get_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"), Range="bytes=0-3")
    return obj["Body"].read()


class LandingReadError(RuntimeError):
    """Reading a landed file failed for a reason that is not its content (S3 unreachable, timeout, 5xx):
    the build fails and is retried instead of dropping the file's rows."""


#: Markers of a read that failed in transport (the file may be fine): network, S3 service, timeouts.
_TRANSIENT_MARKERS = (
    "SocketTimeoutException",
    "ConnectException",
    "Connection reset",
    "Connection refused",
    "UnknownHostException",
    "NoHttpResponseException",
    "SdkClientException",
    "AWSClientIOException",
    "AWSStatus500Exception",
    "ServiceUnavailable",
    "SlowDown",
    "InternalError",
    "timed out",
    "Read timed out",
)


def is_transient_read_error(exc: BaseException) -> bool:
    """True when ``exc`` (a Python or a Spark/JVM error, with its whole trace) says the read itself failed
    (S3 unreachable, reset, timeout, 5xx), as opposed to the file's bytes not being readable Avro."""
    text = f"{type(exc).__name__}: {exc}"
    return any(marker in text for marker in _TRANSIENT_MARKERS)


def split_avro_files(files: list[str], settings: Settings | None = None) -> tuple[list[str], list[str]]:
    """(files starting with the Avro object container magic ``Obj\\x01``, the others).

    A file deleted since it was listed is left out; an empty one (S3 answers the 4-byte range with 416
    InvalidRange) is among the others. Any other failure to read a file's first bytes
    raises LandingReadError naming it: a transient S3 fault must not turn good results into "bad files".
    """
    from botocore.exceptions import ClientError

    good, bad = [], []
    for uri in files:
        try:
            head = _read_head(uri, settings)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                log.warning("%s disappeared since it was listed: skipped", uri)
                continue
            if code in ("InvalidRange", "416"):  # an empty object: no first bytes, certainly not Avro
                bad.append(uri)
                continue
            raise LandingReadError(f"S3: reading {uri} failed: {exc}") from exc
        except FileNotFoundError:
            continue
        except Exception as exc:
            raise LandingReadError(f"S3: reading {uri} failed: {type(exc).__name__}: {exc}") from exc
        (good if head == AVRO_MAGIC else bad).append(uri)
    return good, bad


#: Top-level fields of the current result schema read beyond the v3 contract (each optional with a null
#: default, so files of every version read, the field null where it was not written).
BEYOND_V3_FIELDS = ("experiment_key", "reused_from")


def reader_schema() -> str:
    """The reader schema of landed files: the v3 contract plus :data:`BEYOND_V3_FIELDS` of the current
    result schema (JSON text)."""
    from qp_assets.streaming.schemas import RESULT_SCHEMA, schema_dict

    schema = json.loads(SCHEMA_PATH.read_text())
    current = {f["name"]: f for f in schema_dict(RESULT_SCHEMA)["fields"]}
    schema["fields"] += [current[name] for name in BEYOND_V3_FIELDS]
    return json.dumps(schema)


@dataclass
class RawRead:
    """Raw rows of the readable files plus the files that could not be read as Avro."""

    df: DataFrame | None
    files: list[str]
    bad_files: list[str] = field(default_factory=list)


def read_raw(spark: SparkSession, files: list[str], settings: Settings | None = None) -> RawRead:
    """Read landed Avro ``files`` with :func:`reader_schema` (v3 + the reuse fields); adds ``source_file``.

    The returned DataFrame is an eager local checkpoint: the files are read and decoded exactly once.
    Files without the Avro magic, or whose content spark-avro cannot decode (checked one by one when the
    combined read fails), are returned in ``bad_files`` instead of failing the whole day; the
    ``landed_files_readable`` asset check then fails for that day until they are dealt with. A read that
    fails for any other reason (S3 down, timeout, reset) raises LandingReadError: the build fails and is
    retried, it never drops the file's rows.
    """
    good, bad = split_avro_files(files, settings)
    if not good:
        return RawRead(None, [], bad)
    schema = reader_schema()

    def load(paths: list[str]) -> DataFrame:
        return (
            spark.read.format("avro")
            .option("avroSchema", schema)
            .load(paths)
            .withColumn("source_file", F.input_file_name())
        )

    try:
        # Decode everything once, here (surfaces corrupt files), and keep the decoded rows: every later query
        # of the build reads this checkpoint instead of listing and decoding the files again (each query
        # over the file source re-lists every file on S3 when it is planned).
        return RawRead(load(good).localCheckpoint(eager=True), good, bad)
    except Exception as exc:
        log.warning("combined Avro read failed (%s); checking files one by one", str(exc).splitlines()[0])
    readable = []
    for uri in good:
        try:
            load([uri]).select(F.count(F.lit(1))).collect()
            readable.append(uri)
        except Exception as exc:
            if is_transient_read_error(exc):
                raise LandingReadError(f"reading {uri} failed: {str(exc).splitlines()[0]}") from exc
            log.warning("not a readable v3-compatible Avro file: %s (%s)", uri, str(exc).splitlines()[0])
            bad.append(uri)
    return RawRead(load(readable).localCheckpoint(eager=True) if readable else None, readable, bad)


def violation_reason() -> Column:
    """Why a raw record violates the contract (null when it is fine): the first failing rule, named."""
    iters = F.coalesce(F.col("iterations"), F.array())
    return (
        F.when(F.col("run_id").isNull() | (F.trim(F.col("run_id")) == ""), F.lit("missing run_id"))
        .when(F.col("event_time").isNull(), F.lit("missing event_time"))
        .when(
            F.exists(iters, lambda it: it["iteration"].isNull() | (it["iteration"] < 0)),
            F.lit("negative iteration"),
        )
        .when(F.exists(iters, lambda it: it["parameters"].isNull()), F.lit("missing iteration parameters"))
        .otherwise(F.lit(None))
    )
