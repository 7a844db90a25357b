"""Result reuse, the runner side: the earlier result of an experiment key, from Iceberg and the landed Avro.

Where an earlier result is looked up (docs/vqe.md, Result reuse): the key's row in Iceberg
``quantum_features.vqe_results`` (columns ``experiment_key``, ``reused_from``, ``request_id``, ``run_id``,
``source_file``) says which request computed it and which landed Avro object holds its record; the record
itself is read from that object (S3), whole, exactly as it was published. Iceberg is the index because it
holds exactly one row per request (``qp audit``) and only results that landed; the Avro object is the
source because it has everything (iterations, parameters, Hamiltonian terms, the circuit) without
reassembling ten tables.

The index (key -> earlier run) is kept per process: a key found in it is answered at once; a key not in it
re-reads the index when the table has a new snapshot (a feature build committed since), otherwise costs one
catalog call. A feature build overwrites its day, so the table has a few data files per day to read.
"""

from __future__ import annotations

import io
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

#: The table whose rows index the reusable results.
INDEX_TABLE = "vqe_results"
_INDEX_COLUMNS = ("experiment_key", "reused_from", "request_id", "run_id", "source_file", "event_time",
                  "optimizer_message")  # fmt: skip
#: Prefix of the optimizer message of a run stopped by QP_MAX_WALL_S (machine-dependent: never reused).
WALL_CLOCK_PREFIX = "wall-clock limit"


@dataclass(frozen=True)
class Earlier:
    """The computed run that first produced an experiment key's result."""

    request_id: str
    run_id: str
    source_file: str


# (catalog uri, catalog name) -> (snapshot id, {experiment_key: Earlier})
_INDEXES: dict[tuple[str, str], tuple[int, dict[str, Earlier]]] = {}
_INDEX_LOCK = threading.Lock()


def build_index(rows: list[dict[str, Any]]) -> dict[str, Earlier]:
    """experiment_key -> the earliest computed run (``reused_from`` null, a request id and a landed file,
    not stopped by the wall-clock limit) among ``rows`` (``vqe_results`` rows as dicts)."""
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


def load_index(settings: Settings) -> tuple[int, dict[str, Earlier]] | None:
    """(snapshot id, index) of ``vqe_results`` now, or None when there is no table, no snapshot or no
    ``experiment_key`` column yet (a table from before reuse, not yet evolved by a build)."""
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    from qp_assets.features.catalog import load_feature_table

    try:
        table = load_feature_table(INDEX_TABLE, settings)
    except (NoSuchTableError, NoSuchNamespaceError):
        return None
    snapshot = table.current_snapshot()
    if snapshot is None or "experiment_key" not in {f.name for f in table.schema().fields}:
        return None
    cache_key = (settings.iceberg_catalog_uri, settings.iceberg_catalog_name)
    cached = _INDEXES.get(cache_key)
    if cached is not None and cached[0] == snapshot.snapshot_id:
        return cached
    rows = table.scan(selected_fields=_INDEX_COLUMNS, snapshot_id=snapshot.snapshot_id).to_arrow()
    return snapshot.snapshot_id, build_index(rows.to_pylist())


def find_earlier(settings: Settings, key: str) -> Earlier | None:
    """The earlier computed run of ``key`` in Iceberg, or None (no such row, or no table yet). A key already
    in this process's index is answered from it, and so is any key while the index a run prefetched at its
    start (:func:`prefetch_index`) is fresh; otherwise a miss re-reads the index when the table has a newer
    snapshot."""
    cache_key = (settings.iceberg_catalog_uri, settings.iceberg_catalog_name)
    if key in _INDEXES.get(cache_key, (0, {}))[1]:
        return _INDEXES[cache_key][1][key]
    with _INDEX_LOCK:  # one refresh at a time: a look-up during the prefetch waits for it, never repeats it
        prefetched_at = _PREFETCHED.get(cache_key)
        if prefetched_at is not None and time.monotonic() - prefetched_at < PREFETCH_FRESH_S:
            return _INDEXES[cache_key][1].get(key) if cache_key in _INDEXES else None
        loaded = load_index(settings)
        if loaded is None:
            return None
        _INDEXES[cache_key] = loaded
        return loaded[1].get(key)


#: How long the index a run prefetched answers its look-ups without checking the table's snapshot again,
#: seconds: a run's requests are looked up as of its start (a result built meanwhile is computed again).
PREFETCH_FRESH_S = 30.0
# (catalog uri, catalog name) -> time.monotonic() of the last prefetch that finished
_PREFETCHED: dict[tuple[str, str], float] = {}


def prefetch_index(settings: Settings) -> threading.Thread:
    """Load the index for this run's look-ups in a child process (``python -m qp_assets.runner.reuse``:
    pickled settings in, pickled :func:`load_index` answer out), waited for by a background thread that
    holds the index lock meanwhile; both started here.

    A run worker's first look-up costs the PyIceberg import, the catalog and a scan: about 1.2 s of CPU
    on an idle machine, and in a thread it competed for the GIL with the simulator's warm imports, which
    put about 4 s more between a run's start and its Kafka ack (benchmarks/daemon_latency.py, 2026-11-29:
    run->ack 8.7-9.6 s with reuse, 4.9-5.0 s with QP_REUSE_RESULTS=0). In its own process it runs on the
    other core. Until :data:`PREFETCH_FRESH_S` has passed, look-ups answer from it without touching the
    catalog. Failures are left to the request's own look-up, which then loads the index itself."""
    cache_key = (settings.iceberg_catalog_uri, settings.iceberg_catalog_name)
    started = threading.Event()

    def run() -> None:
        with _INDEX_LOCK:
            started.set()
            try:
                child = subprocess.run(
                    [sys.executable, "-m", __name__], input=pickle.dumps(settings), capture_output=True,
                    timeout=PREFETCH_FRESH_S, check=True,
                )  # fmt: skip
                loaded = pickle.loads(child.stdout)
            except Exception as exc:  # noqa: BLE001 - the request's own look-up loads it and says what failed
                detail = getattr(exc, "stderr", b"") or b""
                log.info("result-reuse index not prefetched (%s: %s) %s", type(exc).__name__, exc,
                         detail.decode(errors="replace")[-300:])  # fmt: skip
                return
            if loaded is not None:
                _INDEXES[cache_key] = loaded
            else:
                _INDEXES.pop(cache_key, None)
            _PREFETCHED[cache_key] = time.monotonic()

    thread = threading.Thread(target=run, name="qp-reuse-index", daemon=True)
    thread.start()
    started.wait(5)  # the lock is held before a request's look-up can take it
    return thread


def read_landed_record(settings: Settings, uri: str, run_id: str) -> dict[str, Any]:
    """The record of ``run_id`` in the landed Avro object ``uri`` (``s3a://``/``s3://`` or ``file://``),
    decoded with its writer schema; LookupError when the object does not hold it."""
    import fastavro

    parts = urlsplit(uri)
    if parts.scheme == "file":
        with open(unquote(parts.path), "rb") as fh:
            data = fh.read()
    else:
        from qp_assets.s3 import s3_client

        obj = s3_client(settings).get_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"))
        data = obj["Body"].read()
    for record in fastavro.reader(io.BytesIO(data)):
        if isinstance(record, dict) and record.get("run_id") == run_id:
            return record
    raise LookupError(f"run {run_id} is not in {uri}")


@dataclass(frozen=True)
class Found:
    """An earlier result to reuse: where it came from and its record."""

    earlier: Earlier
    record: dict[str, Any]


def _lookup(settings: Settings, key: str) -> Found | None:
    earlier = find_earlier(settings, key)
    if earlier is None:
        return None
    return Found(earlier, read_landed_record(settings, earlier.source_file, earlier.run_id))


def lookup(settings: Settings, key: str, timeout_s: float) -> Found | None:
    """The earlier result of ``key`` (Iceberg row + landed record), or None when there is none. Bounded:
    raises TimeoutError after ``timeout_s`` seconds (the look-up runs in a daemon thread, left to finish on
    its own, its answer dropped) and re-raises any other failure (catalog, S3) to the caller."""
    answer: dict[str, Any] = {}

    def work() -> None:
        try:
            answer["found"] = _lookup(settings, key)
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


if __name__ == "__main__":  # the prefetch's child process: settings in, (snapshot id, index) or None out
    from qp_assets.runner import reuse  # the module by its name: Earlier pickles as qp_assets.runner.reuse

    sys.stdout.buffer.write(pickle.dumps(reuse.load_index(pickle.loads(sys.stdin.buffer.read()))))
