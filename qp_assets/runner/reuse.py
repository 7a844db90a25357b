"""Result reuse, the runner side: the earlier result of an experiment key, from the reuse index and the
landed Avro.

Where an earlier result is looked up (docs/vqe.md, Result reuse): the **reuse index**, one small JSON object
in S3 (:func:`index_object_key`: ``s3://<QP_BUCKET>/reuse-index/<catalog>/vqe_results.json``), maps each
experiment key to the run that first computed it (request id, run id, landed Avro object). The feature build
writes it right after it commits Iceberg ``quantum_features.vqe_results`` (``features.build``), from the
committed rows by :func:`build_index`; the record itself is read from that landed object, whole, exactly as
it was published. Iceberg decides what is indexed because it holds exactly one row per request (``qp
audit``) and only results that landed; the Avro object is the source because it has everything
(iterations, parameters, Hamiltonian terms, the circuit) without reassembling ten tables.

Why an object and not the table: reading the table in a run worker costs the PyIceberg and pyarrow
imports, the catalog and a scan (about 1.2-2 s of CPU, ``benchmarks/reuse_lookup.py``), which the
simulator's imports need at the same moment on a small machine; the object is one bounded GET. No object yet
(a stack whose day was never built since) means no reuse: the request computes.

A stale index can only cost a recompute, never a wrong reuse: an entry is used only when the record it
points to is a computed result (``reused_from`` null, not stopped by the wall-clock limit) of the same
request and the same experiment key (:func:`usable`); a key the index does not have yet computes.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from qp_assets.settings import Settings

log = logging.getLogger(__name__)

#: The table whose rows index the reusable results, and the columns :func:`build_index` reads.
INDEX_TABLE = "vqe_results"
INDEX_COLUMNS = ("experiment_key", "reused_from", "request_id", "run_id", "source_file", "event_time",
                 "optimizer_message")  # fmt: skip
#: Prefix of the optimizer message of a run stopped by QP_MAX_WALL_S (machine-dependent: never reused).
WALL_CLOCK_PREFIX = "wall-clock limit"
#: Where the index objects live in ``QP_BUCKET`` (one per Iceberg catalog), and their format version.
INDEX_PREFIX = "reuse-index/"
INDEX_FORMAT = 1


@dataclass(frozen=True)
class Earlier:
    """The computed run that first produced an experiment key's result."""

    request_id: str
    run_id: str
    source_file: str


def build_index(rows: list[dict[str, Any]]) -> dict[str, Earlier]:
    """experiment_key -> the earliest computed run (``reused_from`` null, a request id and a landed file,
    not stopped by the wall-clock limit) among ``rows`` (``vqe_results`` rows as dicts, with at least
    :data:`INDEX_COLUMNS`)."""
    best: dict[str, tuple[Any, Earlier]] = {}
    for row in rows:
        key, message = row.get("experiment_key"), row.get("optimizer_message") or ""
        if not key or row.get("reused_from") or not row.get("request_id") or not row.get("source_file"):
            continue
        if message.startswith(WALL_CLOCK_PREFIX):
            continue
        if key not in best or row["event_time"] < best[key][0]:
            best[key] = (row["event_time"], Earlier(row["request_id"], row["run_id"], row["source_file"]))
    return {key: earlier for key, (_, earlier) in best.items()}


def index_object_key(settings: Settings) -> str:
    """The object key (in ``settings.bucket``) of the reuse index of ``settings``' Iceberg catalog."""
    return f"{INDEX_PREFIX}{settings.iceberg_catalog_name}/{INDEX_TABLE}.json"


def encode_index(index: dict[str, Earlier]) -> bytes:
    """The index object's bytes: ``{"format": 1, "entries": {key: [request_id, run_id, source_file]}}``
    (keys sorted; about 250 bytes per experiment key)."""
    entries = {key: [e.request_id, e.run_id, e.source_file] for key, e in sorted(index.items())}
    return json.dumps({"format": INDEX_FORMAT, "entries": entries}, separators=(",", ":")).encode()


def decode_index(data: bytes) -> dict[str, Earlier]:
    """The index in an object written by :func:`encode_index`; ValueError naming what is wrong otherwise
    (another format version, no entries, an entry that is not three strings)."""
    doc = json.loads(data)
    if (
        not isinstance(doc, dict)
        or doc.get("format") != INDEX_FORMAT
        or not isinstance(doc.get("entries"), dict)
    ):
        raise ValueError(
            f"reuse index: expected format {INDEX_FORMAT} with 'entries', got {str(doc)[:120]!r}"
        )
    index = {}
    for key, entry in doc["entries"].items():
        if not (isinstance(entry, list) and len(entry) == 3 and all(isinstance(v, str) for v in entry)):
            raise ValueError(f"reuse index: entry {key[:12]}... is {entry!r}, not [request_id, run_id, file]")
        index[key] = Earlier(*entry)
    return index


def _client(settings: Settings, timeout_s: float) -> Any:
    from qp_assets.s3 import CONNECT_TIMEOUT_S, s3_client

    return s3_client(settings, connect_timeout_s=min(CONNECT_TIMEOUT_S, timeout_s), read_timeout_s=timeout_s,
                     max_attempts=2)  # fmt: skip


def write_index(settings: Settings, index: dict[str, Earlier], client: Any = None) -> str:
    """Put ``index`` as the reuse index object of ``settings``' catalog (replacing the previous one, whole);
    returns its object key. ``client``: an S3 client (default: the bounded one of ``qp_assets.s3``)."""
    key = index_object_key(settings)
    client = client or _client(settings, 30.0)
    client.put_object(
        Bucket=settings.bucket, Key=key, Body=encode_index(index), ContentType="application/json"
    )
    return key


def fetch_index_bytes(settings: Settings, timeout_s: float, client: Any = None) -> bytes | None:
    """The reuse index object's bytes, or None when there is none yet; one GET, each attempt bounded by
    ``timeout_s`` seconds (connect and read). Other failures (S3 down, no bucket) are raised."""
    client = client or _client(settings, timeout_s)
    try:
        return client.get_object(Bucket=settings.bucket, Key=index_object_key(settings))["Body"].read()
    except Exception as exc:
        if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise


def read_index(settings: Settings, timeout_s: float, client: Any = None) -> dict[str, Earlier] | None:
    """The reuse index now (:func:`fetch_index_bytes`, decoded), or None when there is no object yet."""
    data = fetch_index_bytes(settings, timeout_s, client)
    return None if data is None else decode_index(data)


#: How long an index read (prefetched, or by a look-up) answers this process's look-ups without reading
#: the object again, seconds: a run's requests are looked up as of its start (a result built meanwhile is
#: computed again).
PREFETCH_FRESH_S = 30.0
# (bucket, object key) -> (time.monotonic() of the read, the index or None when there was no object)
_READS: dict[tuple[str, str], tuple[float, dict[str, Earlier] | None]] = {}
_INDEX_LOCK = threading.Lock()


def _read_key(settings: Settings) -> tuple[str, str]:
    return settings.bucket, index_object_key(settings)


def find_earlier(settings: Settings, key: str, timeout_s: float) -> Earlier | None:
    """The earlier computed run of ``key`` in the reuse index, or None (not in it, or no index yet). Answered
    from this process's last read of the index while it is fresh (:data:`PREFETCH_FRESH_S`; a run's
    :func:`prefetch_index` is one), else from a new read (one GET bounded by ``timeout_s``). A look-up
    during the prefetch waits for it, never repeats it."""
    with _INDEX_LOCK:
        read = _READS.get(_read_key(settings))
        if read is None or time.monotonic() - read[0] >= PREFETCH_FRESH_S:
            read = (time.monotonic(), read_index(settings, timeout_s))
            _READS[_read_key(settings)] = read
    return None if read[1] is None else read[1].get(key)


#: True once :func:`warm_s3_client` ran in this process (or in the process it was forked from).
_S3_WARM = False


def warm_s3_client() -> None:
    """Build and drop one bounded S3 client: boto3's default session keeps the S3 service model, so later
    clients of this process, and of processes forked from it, are built in milliseconds (0.6-0.7 s cold on
    the 2-core VM). Opens no connection. The run launcher's fork server calls it
    (``vqe_runner.prepare_run_worker``)."""
    global _S3_WARM
    _client(Settings.from_env(), 5.0)
    _S3_WARM = True


def prefetch_index(settings: Settings, timeout_s: float) -> threading.Thread:
    """Read the reuse index for this run's look-ups in a background thread that holds the index lock
    meanwhile, started here.

    In a cold run worker the thread runs the read in a child process (``python -m qp_assets.runner.reuse``:
    pickled settings and timeout in, the object's bytes out, nothing when there is none): the child pays the
    boto3 import and client (about 0.4 s of CPU) on the other core, so the run's own process, importing the
    simulator meanwhile, only decodes the JSON. In a worker forked from the warmed-up fork server
    (:func:`warm_s3_client` ran) the thread reads it itself: one GET, tens of milliseconds. Failures are left
    to the request's own look-up, which then reads the index itself."""
    started = threading.Event()

    def read_in_child() -> dict[str, Earlier] | None:
        child = subprocess.run(
            [sys.executable, "-m", __name__], input=pickle.dumps((settings, timeout_s)),
            capture_output=True, timeout=PREFETCH_FRESH_S, check=True,
        )  # fmt: skip
        return decode_index(child.stdout) if child.stdout else None

    def run() -> None:
        with _INDEX_LOCK:
            started.set()
            try:
                index = read_index(settings, timeout_s) if _S3_WARM else read_in_child()
            except Exception as exc:  # noqa: BLE001 - the request's own look-up reads it and says what failed
                detail = getattr(exc, "stderr", b"") or b""
                log.info("result-reuse index not prefetched (%s: %s) %s", type(exc).__name__, exc,
                         detail.decode(errors="replace")[-300:])  # fmt: skip
                return
            _READS[_read_key(settings)] = (time.monotonic(), index)

    thread = threading.Thread(target=run, name="qp-reuse-index", daemon=True)
    thread.start()
    started.wait(5)  # the lock is held before a request's look-up can take it
    return thread


def read_landed_record(settings: Settings, uri: str, run_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """The record of ``run_id`` in the landed Avro object ``uri`` (``s3a://``/``s3://`` or ``file://``),
    decoded with its writer schema; LookupError when the object does not hold it. Each S3 attempt is
    bounded by ``timeout_s`` seconds."""
    import fastavro

    parts = urlsplit(uri)
    if parts.scheme == "file":
        with open(unquote(parts.path), "rb") as fh:
            data = fh.read()
    else:
        obj = _client(settings, timeout_s).get_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"))
        data = obj["Body"].read()
    for record in fastavro.reader(io.BytesIO(data)):
        if isinstance(record, dict) and record.get("run_id") == run_id:
            return record
    raise LookupError(f"run {run_id} is not in {uri}")


def unusable(record: dict[str, Any], key: str, earlier: Earlier) -> str | None:
    """Why the landed ``record`` an index entry of ``key`` points to must not be reused (a stale or wrong
    entry), or None when it is a computed result of that request and experiment key."""
    message = str((record.get("optimizer_result") or {}).get("message") or "")
    if record.get("experiment_key") != key:
        return f"its experiment key is {str(record.get('experiment_key'))[:12]}..."
    if record.get("reused_from"):
        return f"it reused request {record['reused_from']!r}"
    if record.get("request_id") != earlier.request_id:
        return f"its request is {record.get('request_id')!r}, not {earlier.request_id!r}"
    if message.startswith(WALL_CLOCK_PREFIX):
        return "it was stopped by the wall-clock limit"
    return None


@dataclass(frozen=True)
class Found:
    """An earlier result to reuse: where it came from and its record."""

    earlier: Earlier
    record: dict[str, Any]


def _lookup(settings: Settings, key: str, timeout_s: float) -> Found | None:
    earlier = find_earlier(settings, key, timeout_s)
    if earlier is None:
        return None
    record = read_landed_record(settings, earlier.source_file, earlier.run_id, timeout_s)
    problem = unusable(record, key, earlier)
    if problem is not None:
        log.warning("reuse index entry of experiment key %s... -> run %s not used: %s", key[:12],
                    earlier.run_id, problem)  # fmt: skip
        return None
    return Found(earlier, record)


def lookup(settings: Settings, key: str, timeout_s: float) -> Found | None:
    """The earlier result of ``key`` (index entry + landed record), or None when there is none. Bounded:
    raises TimeoutError after ``timeout_s`` seconds (the look-up runs in a daemon thread, left to finish on
    its own, its answer dropped; each of its S3 calls is bounded by ``timeout_s`` too) and re-raises any
    other failure (S3, a malformed index) to the caller."""
    answer: dict[str, Any] = {}

    def work() -> None:
        try:
            answer["found"] = _lookup(settings, key, timeout_s)
        except BaseException as exc:  # handed to the caller's thread
            answer["error"] = exc

    thread = threading.Thread(target=work, name="qp-reuse-lookup", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"result look-up of experiment key {key[:12]}... took over {timeout_s:g} s")
    if "error" in answer:
        raise answer["error"]
    return answer["found"]


if __name__ == "__main__":  # the prefetch's child process: (settings, timeout_s) in, the index bytes out
    _settings, _timeout_s = pickle.loads(sys.stdin.buffer.read())
    sys.stdout.buffer.write(fetch_index_bytes(_settings, _timeout_s) or b"")
