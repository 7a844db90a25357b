"""``vqe_runner_job``: consume one offset range of ``vqe.requests``, run one VQE op per request, publish.

Graph: ``load_request_batch`` (reads exactly ``[start_offset, end_offset)`` of one partition, fans out one
DynamicOutput per request) -> ``run_vqe_request`` (pinned to a GPU or the CPU fallback, simulates,
publishes the Avro result, pushes metrics, attaches the convergence plot and the error vs exact) ->
``summarize_batch`` (fan-in). The sensor passes the range as run config, e.g.::

    ops:
      load_request_batch:
        config: {topic: vqe.requests, partition: 0, start_offset: 0, end_offset: 3}

Executors: locally the multiprocess executor limits ops tagged ``gpu`` to the number of GPUs
(``QP_VQE_CPU_SLOTS`` slots on CPU; with a single CPU slot the ops run in the run's process); with ``QP_VQE_EXECUTOR=k8s`` ``k8s_gpu_executor`` requests
``nvidia.com/gpu`` for those ops (see docs/orchestration.md).
"""

import base64
import dataclasses
import importlib
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

from dagster import (
    Backoff,
    Config,
    DynamicOut,
    DynamicOutput,
    Failure,
    In,
    MetadataValue,
    OpExecutionContext,
    Out,
    Output,
    RetryPolicy,
    in_process_executor,
    job,
    multiprocess_executor,
    op,
)
from pydantic import Field

from qp_assets.assets.gpu import gpu_ids, pin_device
from qp_assets.assets.run_tags import VQE_RUN_TAGS
from qp_assets.resources.core import REQUESTS_DLQ_TOPIC, REQUESTS_TOPIC, KafkaResource, PushGatewayResource
from qp_assets.settings import Settings, load_env

GPU_TAG = "gpu"
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}

#: Per-op Kubernetes config carried as a tag; k8s_job_executor merges it into each step's pod.
K8S_GPU_STEP_CONFIG: dict[str, Any] = {
    "container_config": {
        "resources": {
            "limits": {"nvidia.com/gpu": "1", "memory": "8Gi"},
            "requests": {"nvidia.com/gpu": "1", "cpu": "2", "memory": "4Gi"},
        }
    },
    "pod_spec_config": {
        "node_selector": GPU_NODE_SELECTOR,
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}


def gpu_slots() -> int:
    """Concurrent VQE ops allowed on this host: the GPU count, or ``QP_VQE_CPU_SLOTS`` (default 1) on CPU."""
    n = len(gpu_ids())
    if n:
        return n
    return load_env().vqe_cpu_slots


class RequestBatchConfig(Config):
    """One offset range of the request topic (half-open: ``end_offset`` is not included)."""

    topic: str = Field(default=REQUESTS_TOPIC)
    partition: int = Field(default=0, ge=0)
    start_offset: int = Field(ge=0)
    end_offset: int = Field(ge=0)


def _mapping_key(index: int, request: dict[str, Any]) -> str:
    rid = str(request.get("request_id") or "")
    return re.sub(r"[^A-Za-z0-9_]", "_", f"r{index}_{rid}")[:60]


def request_inputs(request: dict[str, Any]) -> tuple[Any, Any, str | None]:
    """(Molecule, VQEConfig, request_id) of a request dict (a scan request's ``scan`` is validated too).

    Accepts ``{"molecule": {...}, "config": {...}}`` or the flat request form whose VQE fields sit beside
    ``molecule``; raises the VQE package's InputError naming the bad field.
    """
    from qp_assets.vqe.config import VQEConfig
    from qp_assets.vqe.molecule import Molecule

    if not isinstance(request.get("molecule"), dict):
        raise ValueError(f"request {request.get('request_id')!r}: field 'molecule' missing or not an object")
    if isinstance(request.get("config"), dict):
        cfg = dict(request["config"])
    else:
        names = {f.name for f in dataclasses.fields(VQEConfig)}
        cfg = {k: v for k, v in request.items() if k in names}
    molecule = Molecule.from_dict(request["molecule"])
    if request.get("scan") is not None:  # every point's geometry and the point count, before any simulation
        from qp_assets.vqe.scan import scan_request

        scan_request(molecule, request["scan"])
    return molecule, VQEConfig.from_dict(cfg), request.get("request_id")


def send_to_dlq(
    request: dict[str, Any], error: str, source: dict[str, Any], settings: Settings, stage: str = "admission"
) -> None:
    """Publish a rejected (decodable but invalid) request with the reason to ``vqe.requests.dlq``: its
    original bytes and true origin (topic, partition, offset) as read by ``load_request_batch``."""
    from qp_assets.streaming.requests import dead_letter_request

    dead_letter_request(
        settings, request, error, stage=stage, default_topic=source.get("topic", REQUESTS_TOPIC)
    )


def _reject(context: OpExecutionContext, request: dict, exc: Exception, settings: Settings, stage: str):
    """Dead-letter a request that cannot be processed (bad input), never fail the run or drop it silently."""
    send_to_dlq(request, str(exc), {"topic": context.run.tags.get("qp/request_topic", REQUESTS_TOPIC)},
                settings, stage)  # fmt: skip
    context.log.error("rejected request %r at %s: %s (sent to %s)", request.get("request_id"), stage, exc,
                      REQUESTS_DLQ_TOPIC)  # fmt: skip
    return Output(
        {"request_id": request.get("request_id"), "status": "rejected", "error": str(exc)},
        metadata={"status": "rejected", "stage": stage, "error": str(exc)},
    )


#: What a request's steps import before its result is acknowledged, in the order they need it: admission
#: (PySCF's basis sets, the sector kernel's memory estimate), the simulation (with what ``run_vqe`` imports
#: lazily) and the publish: several seconds of CPU in every cold run worker (the numba kernels load from
#: their on-disk cache at the first call). The metrics push and the plot (matplotlib) come after the ack and
#: are not warmed: a thread importing them would compete with the simulation for the GIL.
WARM_MODULES = (
    "pyscf.gto",
    "qp_assets.vqe.sector_kernel",
    "qp_assets.vqe.runner",
    "qiskit_nature.second_q.drivers",  # imported inside run_vqe (build_problem): ~1.5 s idle
    "qiskit_nature.second_q.transformers",
    "qiskit_nature.second_q.mappers",
    "qp_assets.streaming.publisher",
)


def start_warm_imports(modules: tuple[str, ...] = WARM_MODULES) -> threading.Thread:
    """Import ``modules`` in a background thread and return it (started, daemon).

    ``load_request_batch`` calls this first, so the imports overlap its Kafka read and Dagster's step
    bookkeeping instead of running after them. Python's per-module import locks make a step that needs a
    module meanwhile wait for the one import in progress (never import twice). An import error is left to the
    step that needs the module, which raises it where it belongs.
    """

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # surfaced by the step that imports it
                return

    thread = threading.Thread(target=run, name="qp-warm-imports", daemon=True)
    thread.start()
    return thread


# A registry or broker outage while reading the range must not lose the batch: retry the same range.
REQUEST_READ_RETRY = RetryPolicy(max_retries=5, delay=10, backoff=Backoff.EXPONENTIAL)


@op(out=DynamicOut(dict), tags={"kind": "kafka"}, retry_policy=REQUEST_READ_RETRY)
def load_request_batch(
    context: OpExecutionContext, config: RequestBatchConfig, kafka: KafkaResource
) -> Iterator[DynamicOutput]:
    """Read exactly the configured offset range and emit one output per admitted request.

    The admission policy runs here, before fan-out: a refused request is dead-lettered (original bytes,
    true origin) without ever taking a GPU slot or, on Kubernetes, a GPU pod."""
    start_warm_imports()  # the simulator's imports overlap the Kafka read (see start_warm_imports)
    from qp_assets.streaming.requests import consume_range
    from qp_assets.vqe.admission import AdmissionLimits, admit_request

    if config.end_offset < config.start_offset:
        raise Failure(f"end_offset {config.end_offset} < start_offset {config.start_offset}")
    limits = AdmissionLimits.from_env()  # a bad QP_MAX_* fails the op, it never dead-letters requests
    read = consume_range(
        config.topic, config.partition, config.start_offset, config.end_offset, kafka.settings()
    )
    refusals: list[tuple[dict, Exception]] = []
    requests = []
    for request in read:  # every check first, then the dead letters: nothing is sent twice on a failed check
        try:
            admit_request(request, limits)
            request_inputs(request)
        except Exception as exc:  # bad input, the request's fault
            refusals.append((request, exc))
            continue
        requests.append(request)
    for request, exc in refusals:
        send_to_dlq(request, str(exc), {"topic": config.topic}, kafka.settings(), "admission")
        context.log.error(
            "refused request %r: %s (sent to %s)", request.get("request_id"), exc, REQUESTS_DLQ_TOPIC
        )
    context.log.info(
        "%d request(s) admitted, %d refused in %s:%d:[%d,%d)",
        len(requests),
        len(refusals),
        config.topic,
        config.partition,
        config.start_offset,
        config.end_offset,
    )
    for index, request in enumerate(requests):
        yield DynamicOutput(request, mapping_key=_mapping_key(index, request))


def _plot_markdown(png: bytes) -> str:
    return f"![convergence](data:image/png;base64,{base64.b64encode(png).decode()})"


@op(
    ins={"request": In(dict)},
    out=Out(dict),
    tags={GPU_TAG: "1", "dagster-k8s/config": K8S_GPU_STEP_CONFIG},
    pool="gpu",
)
def run_vqe_request(
    context: OpExecutionContext, request: dict, kafka: KafkaResource, pushgateway: PushGatewayResource
) -> Iterator[Output]:
    """Simulate one request on its pinned device, publish the result, push metrics, attach the plot."""
    from qp_assets.vqe.admission import AdmissionLimits, WallClock, admit_request
    from qp_assets.vqe.errors import InputError
    from qp_assets.vqe.runner import run_vqe

    settings = dataclasses.replace(kafka.settings(), pushgateway_url=pushgateway.url)
    limits = AdmissionLimits.from_env()  # a bad QP_MAX_* is the operator's error: fail, never dead-letter
    try:  # the admission policy (no SCF) and the request's own validation
        admission = admit_request(request, limits)
        molecule, vqe_config, request_id = request_inputs(request)
    except Exception as exc:  # bad input: dead-letter it, never drop it silently
        yield _reject(context, request, exc, settings, "admission")
        return
    context.log.info("admitted %r: %s", request_id, admission.summary())
    placement = pin_device(vqe_config.device, settings.runtime_dir / "gpu-locks")
    try:
        if vqe_config.device != placement.device and vqe_config.device.upper() != "AUTO":
            context.log.warning("%s", placement.note)
        vqe_config = dataclasses.replace(vqe_config, device=placement.device)
        monitor = _performance_monitor()
        clock = WallClock(limits.max_wall_s)  # stops between iterations; the slot is released below
        if request.get("scan") is not None:
            try:
                yield _run_scan_request(context, request, molecule, vqe_config, settings, clock, monitor)
            finally:
                if monitor:
                    monitor.stop()
            return
        try:
            result = run_vqe(
                molecule,
                vqe_config,
                request_id=request_id,
                progress=False,
                performance_snapshots_provider=monitor.snapshots if monitor else None,
                on_iteration=clock.check,
            )
        except InputError as exc:  # unknown basis, too many qubits, no GPU...: dead-letter, not a failed run
            yield _reject(context, request, exc, settings, "run")
            return
        finally:
            if monitor:
                monitor.stop()
    finally:
        placement.release()
    from qp_assets.streaming.publisher import RecordTooLargeError, publish_result

    try:
        outcome = publish_result(result, settings)
    except RecordTooLargeError as exc:  # Kafka will never take it: dead-letter the request with the reason
        yield _reject(context, request, RuntimeError(f"result {result.run_id}: {exc}"), settings, "publish")
        return
    acked_at = time.time()  # publish_result returns once Kafka acknowledged the record (or spooled it)
    if not outcome.published:
        # spooled locally (Kafka unreachable); `qp results replay` republishes it - never lost, but say so
        context.log.warning("result %s spooled to %s: %s", result.run_id, outcome.spool_path, outcome.error)
    metadata: dict[str, Any] = {
        "request_id": str(request_id),
        "run_id": result.run_id,
        "molecule": result.molecule_name,
        "total_energy_ha": result.total_energy,
        "exact_energy_ha": result.exact_energy,
        "error_vs_exact_mha": result.error_vs_exact_mha,
        "iterations": len(result.iterations),
        "optimizer_message": str(result.optimizer_result.get("message") or ""),  # e.g. the wall-clock stop
        "device_requested": request_inputs_device(request),
        "device_used": result.device_used,
        "placement": placement.note,
        "total_s": result.timings.get("total_s"),
        "result_topic": outcome.topic,
        "published": outcome.published,
        "kafka_partition": outcome.partition if outcome.partition is not None else -1,
        "kafka_offset": outcome.offset if outcome.offset is not None else -1,
    }
    if outcome.published:
        metadata["kafka_acked_at"] = MetadataValue.timestamp(acked_at)
    try:
        from qp_assets.monitoring.metrics import push_vqe_metrics

        metadata["metrics_pushed"] = bool(push_vqe_metrics(result, settings))
    except Exception as exc:  # metrics must not lose a published result
        context.log.warning("pushing metrics failed: %s", exc)
        metadata["metrics_pushed"] = False
    try:
        from qp_assets.monitoring.plots import convergence_plot_png_bytes

        png = convergence_plot_png_bytes(result)
        plot_dir = settings.runtime_dir / "plots"
        plot_dir.mkdir(parents=True, exist_ok=True)
        path = plot_dir / f"{result.run_id}.png"
        path.write_bytes(png)
        metadata["convergence_plot"] = MetadataValue.md(_plot_markdown(png))
        metadata["convergence_plot_path"] = MetadataValue.path(str(path))
    except Exception as exc:
        context.log.warning("convergence plot failed: %s", exc)
    context.log.info(
        "%s: E=%.8f Ha, error vs exact %s mHa on %s",
        result.molecule_name,
        result.total_energy,
        format_mha(result.error_vs_exact_mha),
        result.device_used,
    )
    yield Output(
        {
            "request_id": request_id,
            "status": "published" if outcome.published else "spooled",
            "run_id": result.run_id,
            "molecule": result.molecule_name,
            "total_energy": result.total_energy,
            "error_vs_exact_mha": result.error_vs_exact_mha,
            "device_used": result.device_used,
        },
        metadata=metadata,
    )


def _run_scan_request(
    context: OpExecutionContext,
    request: dict,
    molecule: Any,
    vqe_config: Any,
    settings: Settings,
    clock: Any,
    monitor: Any,
) -> Output:
    """A scan request: every point in order on this op's device (each warm-started from its neighbours'
    optima, so they cannot fan out), each published as its own result as soon as it is done (request id
    ``<request_id>#<index>``, all sharing the scan id = the request id). Output metadata: the scan id, the
    points table and the PES plot. A point that fails to publish for its size is dead-lettered; the
    max wall time (``QP_MAX_WALL_S``) bounds the whole scan."""
    from qp_assets.streaming.publisher import RecordTooLargeError, publish_result
    from qp_assets.vqe.scan import run_scan, scan_request

    request_id = str(request["request_id"])
    i, j, distances, warm = scan_request(molecule, request["scan"])
    outcomes: list[dict[str, Any]] = []

    def publish(result: Any) -> None:
        try:
            outcome = publish_result(result, settings)
        except RecordTooLargeError as exc:
            send_to_dlq({**request, "request_id": result.request_id}, f"result {result.run_id}: {exc}",
                        {"topic": context.run.tags.get("qp/request_topic", REQUESTS_TOPIC)}, settings, "publish")  # fmt: skip
            outcomes.append({"run_id": result.run_id, "status": "rejected"})
            return
        if not outcome.published:
            context.log.warning(
                "result %s spooled to %s: %s", result.run_id, outcome.spool_path, outcome.error
            )
        outcomes.append({"run_id": result.run_id, "status": "published" if outcome.published else "spooled",
                         "topic": outcome.topic, "offset": -1 if outcome.offset is None else outcome.offset,
                         "partition": -1 if outcome.partition is None else outcome.partition})  # fmt: skip

    scan = run_scan(
        molecule, vqe_config, i, j, distances, warm_start=warm, scan_id=request_id, on_result=publish,
        request_id=request_id, on_iteration=clock.check,
        performance_snapshots_provider=monitor.snapshots if monitor else None,
    )  # fmt: skip
    points = scan["points"]
    errors = [p["error_vs_exact_mha"] for p in points if p["error_vs_exact_mha"] is not None]
    rows = "\n".join(
        f"| {p['distance']:.4f} | {p['total_energy']:.8f} | {format_mha(p['error_vs_exact_mha'])} | "
        f"{p['num_iterations']} | {p['initial_point']} | {o['status']} |"
        for p, o in zip(points, outcomes, strict=True)
    )
    metadata: dict[str, Any] = {
        "request_id": request_id,
        "scan_id": scan["scan_id"],
        "molecule": molecule.name,
        "scan_points": len(points),
        "published": sum(o["status"] == "published" for o in outcomes),
        "max_error_vs_exact_mha": max(errors) if errors else None,
        "iterations": sum(p["num_iterations"] for p in points),
        "run_ids": MetadataValue.json([o["run_id"] for o in outcomes]),
        "result_offsets": MetadataValue.json(outcomes),
        "points": MetadataValue.md(
            "| distance (A) | energy (Ha) | error vs exact (mHa) | iterations | start | result |\n"
            "|---|---|---|---|---|---|\n" + rows
        ),
    }
    try:
        from qp_assets.monitoring.plots import pes_plot_png_bytes

        png = pes_plot_png_bytes(scan)
        plot_dir = settings.runtime_dir / "plots"
        plot_dir.mkdir(parents=True, exist_ok=True)
        path = plot_dir / f"scan-{re.sub(r'[^A-Za-z0-9_.-]', '_', request_id)}.png"
        path.write_bytes(png)
        metadata["pes_plot"] = MetadataValue.md(
            f"![PES](data:image/png;base64,{base64.b64encode(png).decode()})"
        )
        metadata["pes_plot_path"] = MetadataValue.path(str(path))
    except Exception as exc:
        context.log.warning("PES plot failed: %s", exc)
    context.log.info("scan %s: %d point(s) of %s, max error vs exact %s mHa", request_id, len(points),
                     molecule.name, format_mha(max(errors) if errors else None))  # fmt: skip
    published = [o for o in outcomes if o["status"] != "rejected"]
    return Output(
        {"request_id": request_id, "status": "published" if published else "rejected",
         "scan_id": scan["scan_id"], "run_id": published[-1]["run_id"] if published else None,
         "run_ids": [o["run_id"] for o in published], "molecule": molecule.name,
         "total_energy": min(p["total_energy"] for p in points),
         "error_vs_exact_mha": max(errors) if errors else None, "device_used": vqe_config.device},
        metadata=metadata,
    )  # fmt: skip


def format_mha(value: float | None) -> str:
    """An error in milli-hartree as people read it: 4 decimals (0.0001 mHa resolution), '-' when unknown."""
    return "-" if value is None else f"{value:.4f}"


def _performance_monitor():
    """A started PerformanceMonitor (1 s samples) or None when the monitoring package is unavailable."""
    try:
        from qp_assets.monitoring.monitor import PerformanceMonitor
    except ImportError:
        return None
    return PerformanceMonitor(1.0).start()


def request_inputs_device(request: dict[str, Any]) -> str:
    cfg = request.get("config") if isinstance(request.get("config"), dict) else request
    return str(cfg.get("device") or "CPU")


@op(ins={"results": In(list)}, out=Out(dict))
def summarize_batch(context: OpExecutionContext, results: list) -> Output:
    """Fan-in: counts of published / rejected requests of the batch."""
    published = [r for r in results if r.get("status") == "published"]
    rejected = [r for r in results if r.get("status") == "rejected"]
    summary = {
        "published": len(published),
        "rejected": len(rejected),
        "run_ids": [
            rid for r in published for rid in (r.get("run_ids") or [r["run_id"]])
        ],  # scans: every point
    }
    table = "\n".join(
        f"| {r['molecule']} | {r['total_energy']:.8f} | {format_mha(r['error_vs_exact_mha'])} | {r['device_used']} |"
        for r in published
    )
    return Output(
        summary,
        metadata={
            "published": len(published),
            "rejected": len(rejected),
            "results": MetadataValue.md(
                "| molecule | energy (Ha) | error vs exact (mHa) | device |\n|---|---|---|---|\n" + table
            ),
        },
    )


def local_gpu_executor():
    """The local executor: ``gpu``-tagged ops limited to the GPU count (CPU fallback: ``gpu_slots()``).

    With one slot (a CPU-only host, the default ``QP_VQE_CPU_SLOTS=1``) the ops run one at a time anyway,
    so they run in the run's own process (``local_inprocess_executor``): a child process per step would
    re-import Dagster, the definitions and the simulator (about 4 s each on 2 cores) for no concurrency.
    Several GPUs or CPU slots: the multiprocess executor, one process per op, pinned to its device.
    """
    slots = gpu_slots()
    if slots == 1 and not gpu_ids():
        return in_process_executor.configured({}, name="local_inprocess_executor")
    return multiprocess_executor.configured(
        {
            "max_concurrent": slots + 1,
            "tag_concurrency_limits": [{"key": GPU_TAG, "value": "1", "limit": slots}],
        },
        name="local_gpu_executor",
    )


def k8s_gpu_executor(image: str = "qp-vqe-runner:gpu", namespace: str = "quantum-pipeline"):
    """``k8s_job_executor`` for clusters: every step in its own pod; ``gpu`` ops get ``nvidia.com/gpu``."""
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(
        {
            "job_image": image,
            "job_namespace": namespace,
            "max_concurrent": 8,
            "tag_concurrency_limits": [{"key": GPU_TAG, "value": "1", "limit": 4}],
        },
        name="k8s_gpu_executor",
    )


def executor_from_env(environ: dict[str, str] | None = None):
    """The runner executor chosen by configuration: ``QP_VQE_EXECUTOR=local`` (default) or ``k8s``.

    For ``k8s``, ``QP_VQE_RUNNER_IMAGE`` and ``QP_K8S_NAMESPACE`` set the step image and namespace (run config
    ``execution.config`` can still override both per run).
    """
    env = load_env(environ)
    if env.vqe_executor == "k8s":
        return k8s_gpu_executor(env.vqe_runner_image, env.k8s_namespace)
    return local_gpu_executor()


def build_vqe_runner_job(executor=None, read_retry: RetryPolicy | None = None):
    """The job with the given executor, else the one ``QP_VQE_EXECUTOR`` selects (see :func:`executor_from_env`).

    ``read_retry`` replaces ``load_request_batch``'s retry budget (default :data:`REQUEST_READ_RETRY`, about
    6 minutes); a range that still fails is retried by the request sensor (``sensors.range_retry``).
    """
    loader = load_request_batch.with_retry_policy(read_retry) if read_retry else load_request_batch

    @job(
        name="vqe_runner_job",
        executor_def=executor or executor_from_env(),
        tags=dict(VQE_RUN_TAGS),
        description="Run one offset range of VQE requests: simulate, publish, push metrics.",
    )
    def vqe_runner_job():
        results = loader().map(run_vqe_request)
        summarize_batch(results.collect())

    return vqe_runner_job
