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

from qp_assets.assets.run_tags import VQE_RUN_TAGS
from qp_assets.resources.core import KafkaResource, PushGatewayResource, SchemaRegistryResource
from qp_assets.runner.gpu import GPU_POOL, gpu_ids
from qp_assets.runner.process import (
    format_mha,
    prepare_publish,
    process_request,
    request_inputs,
    reuse_refusal,
    send_to_dlq,
)
from qp_assets.settings import load_env
from qp_assets.streaming.topics import REQUESTS_DLQ_TOPIC, REQUESTS_TOPIC

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


def vqe_pool() -> str | None:
    """The concurrency pool of ``run_vqe_request``: :data:`GPU_POOL` where its steps take a GPU (this host has
    GPUs, or ``QP_VQE_EXECUTOR=k8s`` asks for one per step pod), so that no more steps run across all runs
    than there are devices; none on a CPU-only host. There the runs' own limit bounds the simulations
    (``qp/kind=vqe``: 2 runs at once in ``dagster.yaml``, one step at a time each with one CPU slot), and a
    pool of one slot would only serialise the two runs' steps: measured on the 2-core VM, a 150-request
    campaign made 49.6 runs/min with the pool of one slot, its steps waiting for the slot in
    polls of 1 s growing to 15 s ("Step blocked by limit for pool gpu"); with two slots, 85.0."""
    if gpu_ids() or load_env().vqe_executor == "k8s":
        return GPU_POOL
    return None


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


def prepare_run_worker() -> None:
    """Everything a run worker forked from the run launcher's fork server (``assets.run_forkserver``) should
    find done, so that its VQE step pays neither imports nor first calls (2-core VM, measured in a forked
    child: the reuse-index read 0.72 -> 0.08 s, the H2 ``run_vqe`` 0.68 -> 0.18 s):

    * the imports of :data:`WARM_MODULES`, and boto3 with the S3 client's service model loaded (a client is
      built and dropped: no connection is opened);
    * one small VQE (H2, STO-3G, the default configuration), which loads what ``run_vqe`` imports lazily and
      the numba kernels from their cache.

    Nothing may leave a thread or a connection behind: children inherit neither. OpenMP is held to one thread
    during the VQE (GNU OpenMP's thread pool is not usable in a forked child; the children start their own),
    and tqdm's monitor thread is off.
    """
    import pyscf.lib
    import tqdm

    from qp_assets.runner.reuse import warm_s3_client
    from qp_assets.vqe.config import VQEConfig
    from qp_assets.vqe.molecule import load_molecules
    from qp_assets.vqe.runner import run_vqe

    for name in WARM_MODULES:
        importlib.import_module(name)
    warm_s3_client()
    tqdm.tqdm.monitor_interval = 0
    with pyscf.lib.with_omp_threads(1):
        run_vqe(
            load_molecules()["H2"], VQEConfig.from_dict({"seed": 0}), request_id="warm-up", progress=False
        )


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
        config.topic, config.partition, config.start_offset, config.end_offset, kafka.settings(),
        timeout_s=load_env().request_read_timeout_s,
    )  # fmt: skip
    refusals: list[tuple[dict, Exception]] = []
    requests, configs = [], []
    for request in read:  # every check first, then the dead letters: nothing is sent twice on a failed check
        try:
            admit_request(request, limits)
            configs.append(request_inputs(request)[1])
        except Exception as exc:  # bad input, the request's fault
            refusals.append((request, exc))
            continue
        requests.append(request)
    if any(reuse_refusal(r, c) is None for r, c in zip(requests, configs, strict=True)):
        from qp_assets.runner.reuse import prefetch_index  # the result-reuse index, in the background

        prefetch_index(kafka.settings(), load_env().reuse_lookup_timeout_s)
    prepare_publish(configs, kafka.settings())  # topics, serializers and producer, while it simulates
    for request, exc in refusals:
        send_to_dlq(request, str(exc), kafka.settings(), "admission", config.topic)
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


def _plot_markdown(name: str, png: bytes) -> str:
    alt = "PES" if name == "pes_plot" else "convergence"
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


@op(
    ins={"request": In(dict)},
    out=Out(dict),
    tags={GPU_TAG: "1", "dagster-k8s/config": K8S_GPU_STEP_CONFIG},
    pool=vqe_pool(),
)
def run_vqe_request(
    context: OpExecutionContext,
    request: dict,
    kafka: KafkaResource,
    schema_registry: SchemaRegistryResource,
    pushgateway: PushGatewayResource,
) -> Output:
    """Simulate one request on its pinned device, publish the result, push metrics, attach the plot
    (:func:`qp_assets.runner.process.process_request`; the endpoints are the resources')."""
    settings = dataclasses.replace(
        kafka.settings(), schema_registry_url=schema_registry.url, pushgateway_url=pushgateway.url
    )
    topic = context.run.tags.get("qp/request_topic", REQUESTS_TOPIC)
    done = process_request(request, settings, request_topic=topic, log=context.log)
    metadata: dict[str, Any] = dict(done.metadata)
    metadata.update({name: MetadataValue.md(text) for name, text in done.markdown.items()})
    metadata.update({name: MetadataValue.json(value) for name, value in done.json.items()})
    if done.acked_at is not None:
        metadata["kafka_acked_at"] = MetadataValue.timestamp(done.acked_at)
    for name, path in done.plots.items():  # inline in the UI, and the file
        metadata[name] = MetadataValue.md(_plot_markdown(name, path.read_bytes()))
        metadata[f"{name}_path"] = MetadataValue.path(str(path))
    return Output(done.output, metadata=metadata)


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
