"""VQE run metrics for the Prometheus PushGateway.

One push per run, under ``job="quantum_pipeline"`` with grouping key ``run_id=<run id>``: concurrent and
later runs never overwrite each other (each run is its own PushGateway group, and the PushGateway adds
``job`` and ``run_id`` as labels to every series). Every series also carries the labels ``molecule``,
``basis_set``, ``backend`` (Aer method), ``device`` (CPU/GPU actually used), ``optimizer``, ``ansatz`` and
``experiment_id``.

Groups accumulate (one per run): :func:`cleanup_stale_groups` deletes groups whose last push is older
than a given age (``qp monitoring cleanup --older-than 7d``). Prometheus keeps the history in its TSDB.

A PushGateway outage never fails or slows a run: the push has a hard wall-clock bound (``timeout_s``), a
failure is logged once per outage (module-level flag) and :func:`push_vqe_metrics` returns False; the same
numbers stay in the JSON/Avro result (``performance_snapshots``, ``timings``, energies).

Units: energies in hartree, errors in millihartree, times in seconds, memory in bytes, CPU/memory in %.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.exposition import push_to_gateway

from qp_assets.vqe.result import as_record

log = logging.getLogger(__name__)

JOB = "quantum_pipeline"
ITERATION_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

# name -> (type, help). Everything push_vqe_metrics can export; the two GPU ones only when a GPU was sampled.
VQE_METRICS: dict[str, tuple[str, str]] = {
    "quantum_vqe_minimum_energy": ("gauge", "Final VQE total energy of the run (hartree)."),
    "quantum_vqe_exact_energy": ("gauge", "Exact (FCI) reference total energy in the same space (hartree)."),
    "quantum_vqe_hf_energy": ("gauge", "Hartree-Fock reference total energy (hartree)."),
    "quantum_vqe_error_mha": ("gauge", "VQE energy minus exact reference (millihartree)."),
    "quantum_vqe_iterations_count": ("gauge", "Optimizer iterations (nit)."),
    "quantum_vqe_function_evaluations": ("gauge", "Energy evaluations (nfev)."),
    "quantum_vqe_optimizer_success": ("gauge", "1 if the optimizer reported success, else 0."),
    "quantum_vqe_num_qubits": ("gauge", "Qubits of the mapped Hamiltonian."),
    "quantum_vqe_num_parameters": ("gauge", "Variational parameters of the ansatz."),
    "quantum_vqe_total_time": ("gauge", "Wall time of the whole run (seconds)."),
    "quantum_vqe_hamiltonian_time": ("gauge", "Time building the electronic structure problem (seconds)."),
    "quantum_vqe_mapping_time": ("gauge", "Time mapping to qubits (seconds)."),
    "quantum_vqe_vqe_time": ("gauge", "Time in the VQE optimisation loop (seconds)."),
    "quantum_vqe_time_per_iteration": ("gauge", "Mean VQE loop time per optimizer iteration (seconds)."),
    "quantum_vqe_iteration_seconds": ("histogram", "Wall time of each optimizer iteration (seconds)."),
    "quantum_vqe_run_timestamp_seconds": ("gauge", "When the run finished (unix seconds, UTC)."),
    "quantum_system_cpu_percent": ("gauge", "Mean system-wide CPU use during the run (%)."),
    "quantum_system_cpu_percent_max": ("gauge", "Peak system-wide CPU use during the run (%)."),
    "quantum_system_memory_percent": ("gauge", "Peak system-wide memory use during the run (%)."),
    "quantum_process_rss_bytes": ("gauge", "Peak resident memory of the VQE process (bytes)."),
    "quantum_gpu_utilization_percent": ("gauge", "Mean NVIDIA GPU utilisation during the run (%)."),
    "quantum_gpu_memory_used_bytes": ("gauge", "Peak NVIDIA GPU memory used during the run (bytes)."),
}

_outage_logged = False
_outage_lock = threading.Lock()


# ---------------------------------------------------------------------------------------------- helpers
def gateway_url(target: Any) -> str:
    """Base URL ``http://host:port`` from a URL, ``host:port`` or an object with ``pushgateway_url``."""
    url = getattr(target, "pushgateway_url", target)
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"pushgateway_url must be a non-empty 'host:port' or URL, got {url!r}")
    url = url.strip().rstrip("/")
    return url if "://" in url else f"http://{url}"


def vqe_labels(record: Mapping[str, Any]) -> dict[str, str]:
    """The label set of a run's series, from a vqe_result_v3 record."""
    return {
        "molecule": str(record["molecule"]["name"]),
        "basis_set": str(record["basis"]),
        "backend": str(record["backend"]["method"]),
        "device": str(record["backend"]["device_used"]),
        "optimizer": str(record["optimizer"]["name"]),
        "ansatz": str(record["ansatz"]["name"]),
        "experiment_id": str(record.get("experiment_id") or ""),
    }


def iteration_durations_s(record: Mapping[str, Any]) -> list[float]:
    """Wall time of each optimizer iteration (seconds) from consecutive iteration timestamps (ms).

    Consecutive differences give ``len(iterations) - 1`` values (millisecond resolution); a run with a
    single iteration reports ``timings.vqe_s``.
    """
    stamps = [int(it["timestamp"]) for it in record.get("iterations", [])]
    if not stamps:
        return []
    durations = [max(b - a, 0) / 1000.0 for a, b in zip(stamps, stamps[1:], strict=False)]
    if len(stamps) == 1:
        durations = [float(record.get("timings", {}).get("vqe_s", 0.0))]
    return durations


class _IterationHistogram:
    """Collector for quantum_vqe_iteration_seconds (built directly: no ``_created`` series to push)."""

    def __init__(self, labels: dict[str, str], durations_s: list[float]) -> None:
        self.labels = labels
        self.durations_s = durations_s

    def collect(self) -> list[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "quantum_vqe_iteration_seconds",
            VQE_METRICS["quantum_vqe_iteration_seconds"][1],
            labels=list(self.labels),
        )
        buckets = [(repr(b), sum(1 for d in self.durations_s if d <= b)) for b in ITERATION_BUCKETS_S]
        buckets.append(("+Inf", len(self.durations_s)))
        family.add_metric(list(self.labels.values()), buckets, sum(self.durations_s))
        return [family]


def _sample_now() -> list[dict[str, Any]]:
    """One snapshot when the run had no monitor (50 ms CPU window)."""
    from qp_assets.monitoring.monitor import PerformanceMonitor

    monitor = PerformanceMonitor()
    time.sleep(0.05)
    return [monitor.sample()]


def build_registry(result: Any, *, snapshots: list[dict[str, Any]] | None = None) -> CollectorRegistry:
    """A fresh CollectorRegistry holding one run's metrics (see VQE_METRICS)."""
    from qp_assets.monitoring.monitor import summarize_snapshots

    rec = as_record(result)
    labels = vqe_labels(rec)
    names = list(labels)
    registry = CollectorRegistry()

    def gauge(name: str, value: float | None) -> None:
        if value is None:
            return
        Gauge(name, VQE_METRICS[name][1], names, registry=registry).labels(**labels).set(float(value))

    refs = rec.get("reference_energies") or {}
    opt = rec.get("optimizer_result") or {}
    timings = rec.get("timings") or {}
    nit = int(opt.get("nit", len(rec.get("iterations", []))))
    gauge("quantum_vqe_minimum_energy", rec["total_energy"])
    gauge("quantum_vqe_exact_energy", refs.get("exact"))
    gauge("quantum_vqe_hf_energy", refs.get("hf"))
    gauge("quantum_vqe_error_mha", rec.get("error_vs_exact_mha"))
    gauge("quantum_vqe_iterations_count", nit)
    gauge("quantum_vqe_function_evaluations", opt.get("nfev"))
    gauge("quantum_vqe_optimizer_success", 1.0 if opt.get("success") else 0.0)
    gauge("quantum_vqe_num_qubits", (rec.get("active_space") or {}).get("num_qubits"))
    gauge("quantum_vqe_num_parameters", (rec.get("ansatz") or {}).get("num_parameters"))
    gauge("quantum_vqe_total_time", timings.get("total_s"))
    gauge("quantum_vqe_hamiltonian_time", timings.get("hamiltonian_s"))
    gauge("quantum_vqe_mapping_time", timings.get("mapping_s"))
    gauge("quantum_vqe_vqe_time", timings.get("vqe_s"))
    if timings.get("vqe_s") is not None:
        gauge("quantum_vqe_time_per_iteration", float(timings["vqe_s"]) / max(nit, 1))
    if rec.get("event_time") is not None:
        gauge("quantum_vqe_run_timestamp_seconds", int(rec["event_time"]) / 1000.0)

    registry.register(_IterationHistogram(labels, iteration_durations_s(rec)))

    if snapshots is None:
        snapshots = list(rec.get("performance_snapshots") or []) or _sample_now()
    summary = summarize_snapshots(snapshots)
    gauge("quantum_system_cpu_percent", summary["cpu_percent_mean"])
    gauge("quantum_system_cpu_percent_max", summary["cpu_percent_max"])
    gauge("quantum_system_memory_percent", summary["memory_percent_max"])
    gauge("quantum_process_rss_bytes", summary["process_rss_bytes_max"])
    gauge("quantum_gpu_utilization_percent", summary["gpu_utilization_percent_mean"])
    gauge("quantum_gpu_memory_used_bytes", summary["gpu_memory_used_bytes_max"])
    return registry


def _bounded(fn: Callable[[], None], timeout_s: float) -> None:
    """Run ``fn`` in a daemon thread; raise TimeoutError if it has not finished after ``timeout_s``."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    thread = threading.Thread(target=target, name="qp-metrics-push", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout_s:g} s")
    if errors:
        raise errors[0]


def _note_outage(url: str, exc: BaseException) -> None:
    global _outage_logged
    with _outage_lock:
        first = not _outage_logged
        _outage_logged = True
    if first:
        log.warning(
            "PushGateway %s unavailable (%s); metrics not pushed (they stay in the result's JSON). "
            "Further failures are logged at DEBUG until a push succeeds.",
            url,
            exc,
        )
    else:
        log.debug("PushGateway %s still unavailable: %s", url, exc)


def _note_success() -> None:
    global _outage_logged
    with _outage_lock:
        _outage_logged = False


# ---------------------------------------------------------------------------------------------- API
def push_vqe_metrics(
    result: Any,
    pushgateway_url: Any,
    *,
    timeout_s: float = 2.0,
    snapshots: list[dict[str, Any]] | None = None,
) -> bool:
    """Push one run's metrics to the PushGateway group ``job=quantum_pipeline, run_id=<run_id>``.

    ``result``: a VQEResult (or its ``to_record()`` dict). ``pushgateway_url``: ``host:port``, a URL, or a
    Settings-like object with ``pushgateway_url``. ``snapshots`` overrides ``result.performance_snapshots``
    for the system metrics. Returns True when pushed; False (never raises, returns within ``timeout_s``
    seconds plus a few ms) when the PushGateway is unreachable, slow or rejects the push.
    Bad ``result`` input (not a VQE result) raises TypeError/KeyError.
    """
    url = gateway_url(pushgateway_url)
    rec = as_record(result)
    registry = build_registry(rec, snapshots=snapshots)
    grouping_key = {"run_id": str(rec["run_id"])}
    deadline = time.monotonic() + timeout_s

    def push() -> None:
        push_to_gateway(url, job=JOB, registry=registry, grouping_key=grouping_key, timeout=timeout_s)

    try:
        _bounded(push, max(deadline - time.monotonic(), 0.001))
    except Exception as exc:  # noqa: BLE001 - an outage must never fail the run
        _note_outage(url, exc)
        return False
    _note_success()
    return True


def _group_path(job: str, grouping_key: Mapping[str, str]) -> str:
    """``/metrics/job/<job>/<k>/<v>...`` with base64 encoding for values that contain '/' or are empty."""
    parts = []
    for key, value in [("job", job), *grouping_key.items()]:
        if value == "" or "/" in value:
            encoded = base64.urlsafe_b64encode(value.encode()).decode() or "="
            parts.append(f"{key}@base64/{encoded}")
        else:
            parts.append(f"{key}/{urllib.request.quote(value, safe='')}")
    return "/metrics/" + "/".join(parts)


def list_groups(pushgateway_url: Any, *, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """All PushGateway groups: ``[{"labels": {job, run_id, ...}, "push_time_seconds": float}]``.

    Uses the PushGateway API ``GET /api/v1/metrics``. Raises OSError/URLError when unreachable.
    """
    url = gateway_url(pushgateway_url) + "/api/v1/metrics"
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        payload = json.loads(response.read())
    groups = []
    for group in payload.get("data", []):
        labels = dict(group.get("labels", {}))
        push_time = 0.0
        for metric in (group.get("push_time_seconds") or {}).get("metrics", []):
            push_time = max(push_time, float(metric.get("value", 0.0)))
        groups.append({"labels": labels, "push_time_seconds": push_time})
    return groups


def delete_group(pushgateway_url: Any, grouping_key: Mapping[str, str], *, job: str = JOB,
                 timeout_s: float = 5.0) -> None:  # fmt: skip
    """Delete one PushGateway group (``DELETE /metrics/job/<job>/<key>/<value>...``)."""
    url = gateway_url(pushgateway_url) + _group_path(job, grouping_key)
    request = urllib.request.Request(url, method="DELETE")
    with urllib.request.urlopen(request, timeout=timeout_s):
        pass


def delete_run_metrics(pushgateway_url: Any, run_id: str, *, timeout_s: float = 5.0) -> None:
    """Delete the metrics group of one VQE run."""
    delete_group(pushgateway_url, {"run_id": run_id}, timeout_s=timeout_s)


def cleanup_stale_groups(
    pushgateway_url: Any,
    older_than_s: float,
    *,
    job: str | None = JOB,
    now_s: float | None = None,
    dry_run: bool = False,
    timeout_s: float = 5.0,
) -> list[dict[str, str]]:
    """Delete PushGateway groups whose last push is older than ``older_than_s`` seconds.

    Only groups of ``job`` (default ``quantum_pipeline``; None = every job) are considered. Returns the
    label sets (grouping keys incl. ``job``) deleted, or that would be deleted with ``dry_run``.
    Prometheus keeps the already-scraped history; only the PushGateway's copy goes away.
    """
    if not older_than_s >= 0:
        raise ValueError(f"older_than_s must be >= 0 seconds, got {older_than_s!r}")
    now = time.time() if now_s is None else now_s
    stale = []
    for group in list_groups(pushgateway_url, timeout_s=timeout_s):
        labels = group["labels"]
        if job is not None and labels.get("job") != job:
            continue
        if now - group["push_time_seconds"] >= older_than_s:
            stale.append(labels)
    if not dry_run:
        for labels in stale:
            key = {k: v for k, v in labels.items() if k != "job"}
            try:
                delete_group(pushgateway_url, key, job=labels["job"], timeout_s=timeout_s)
            except urllib.error.HTTPError as exc:
                log.warning("could not delete PushGateway group %s: %s", labels, exc)
    return stale
