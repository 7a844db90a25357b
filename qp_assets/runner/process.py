"""One VQE request from admission to a published result, without Dagster.

:func:`process_request` is what ``vqe_runner_job``'s ``run_vqe_request`` op does for each request:

1. admission (``QP_MAX_*``, no SCF) and the request's own validation; bad input is dead-lettered
   (``vqe.requests.dlq``, its original bytes and origin) with the stage ``admission``;
2. a device slot (``runner.gpu.pin_device``: a GPU when asked and free, else the CPU fallback);
3. the result: reused from an earlier run of the same experiment key when Iceberg has one and the request
   is not forced (:func:`reusable_result`, no simulation), else the simulation (``vqe.runner.run_vqe``)
   under the wall-clock limit, with 1 s performance snapshots; an InputError found only now (an unknown
   basis, too many qubits) is dead-lettered at stage ``run``;
4. the publish (Avro, schema registry, Kafka; spooled locally when Kafka is down); a result Kafka will
   never take (over the record size) dead-letters the request at stage ``publish``;
5. after the acknowledgement: the metrics push and the convergence plot, neither of which can lose a
   published result (their failures are logged and recorded as metadata).

Every side effect goes through :class:`Steps`, so unit tests replace them with fakes
(``tests/test_runner_units.py``); the defaults are the real implementations.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qp_assets.runner.gpu import pin_device
from qp_assets.settings import Settings
from qp_assets.streaming.topics import REQUESTS_DLQ_TOPIC, REQUESTS_TOPIC

logger = logging.getLogger(__name__)


def expected_result_topic(config: Any) -> str | None:
    """The result topic a CPU request's result will be published to (``VQEConfig`` -> topic), or None when
    the device is only known at run time (GPU, auto)."""
    from qp_assets.streaming.schemas import RESULT_SCHEMA, latest_version
    from qp_assets.streaming.topics import result_topic

    if config.device != "CPU":
        return None
    record = {
        "basis": config.basis,
        "mapper": config.mapper,
        "ansatz": {"name": config.ansatz},
        "backend": {"method": config.backend_method, "shots": config.shots, "device_used": "CPU"},
    }
    return result_topic(record, latest_version(RESULT_SCHEMA))


def prepare_publish(configs: list[Any], settings: Settings) -> threading.Thread:
    """Prepare the publish of the results of ``configs`` (``streaming.publisher.prepare_publish``: each
    result topic created, its serializer registered, the producer connected) in a background thread,
    started and returned, while the requests are simulated.

    A configuration's first result goes to a topic that does not exist yet; created seconds before its
    publish, the topic is already known to the S3 sink (it refreshes its topic list every 2 s) and has a
    leader when the result comes, so the result lands as soon as one on an existing topic. The run's first
    acknowledgement no longer waits for the producer's connection and the registry (0.6-0.7 s -> about
    0.1 s). Failures are logged only: the publish does the same itself (or spools the result)."""
    from qp_assets.streaming import publisher

    topics = sorted({t for t in map(expected_result_topic, configs) if t}) or [None]

    def run() -> None:
        for topic in topics:
            try:
                publisher.prepare_publish(settings, topic)
            except Exception as exc:  # noqa: BLE001 - the publish does it again (or spools) and says why
                logger.warning("could not prepare the publish to %s ahead of it: %s", topic or "Kafka", exc)

    thread = threading.Thread(target=run, name="qp-prepare-publish", daemon=True)
    thread.start()
    return thread


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


def requested_device(request: dict[str, Any]) -> str:
    cfg = request.get("config") if isinstance(request.get("config"), dict) else request
    return str(cfg.get("device") or "CPU")


def format_mha(value: float | None) -> str:
    """An error in milli-hartree as people read it: 4 decimals (0.0001 mHa resolution), '-' when unknown."""
    return "-" if value is None else f"{value:.4f}"


def send_to_dlq(request: dict[str, Any], error: str, settings: Settings, stage: str, topic: str) -> None:
    """Publish a rejected (decodable but invalid) request with the reason to ``vqe.requests.dlq``: its
    original bytes and true origin (topic, partition, offset) as read by ``consume_range``."""
    from qp_assets.streaming.requests import dead_letter_request

    dead_letter_request(settings, request, error, stage=stage, default_topic=topic)


def _run_vqe(molecule: Any, config: Any, **kwargs: Any) -> Any:
    from qp_assets.vqe.runner import run_vqe

    return run_vqe(molecule, config, **kwargs)


def _publish(result: Any, settings: Settings) -> Any:
    from qp_assets.streaming.publisher import publish_result

    return publish_result(result, settings)


def _push_metrics(result: Any, settings: Settings) -> bool:
    from qp_assets.monitoring.metrics import push_vqe_metrics

    return bool(push_vqe_metrics(result, settings))


def _plot(result: Any) -> bytes:
    from qp_assets.monitoring.plots import convergence_plot_png_bytes

    return convergence_plot_png_bytes(result)


def _lookup(settings: Settings, key: str, timeout_s: float) -> Any:
    from qp_assets.runner.reuse import lookup

    return lookup(settings, key, timeout_s)


def _monitor() -> Any:
    """A started PerformanceMonitor (1 s samples) or None when the monitoring package is unavailable."""
    try:
        from qp_assets.monitoring.monitor import PerformanceMonitor
    except ImportError:
        return None
    return PerformanceMonitor(1.0).start()


@dataclass(frozen=True)
class Steps:
    """The side effects of :func:`process_request` (defaults: the real ones)."""

    run: Callable[..., Any] = _run_vqe
    publish: Callable[[Any, Settings], Any] = _publish
    dead_letter: Callable[[dict, str, Settings, str, str], None] = send_to_dlq
    push_metrics: Callable[[Any, Settings], bool] = _push_metrics
    plot: Callable[[Any], bytes] = _plot
    pin: Callable[[str, Path], Any] = pin_device
    monitor: Callable[[], Any] = _monitor
    lookup: Callable[[Settings, str, float], Any] = _lookup


@dataclass
class Processed:
    """What became of one request. ``status``: ``published``, ``spooled`` (Kafka down, kept locally for
    ``qp results replay``) or ``rejected`` (dead-lettered at ``metadata["stage"]``)."""

    status: str
    output: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    #: when Kafka acknowledged the result (epoch seconds), None unless published
    acked_at: float | None = None
    #: metadata entries to show as Markdown (tables) and as JSON
    markdown: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] = field(default_factory=dict)
    #: name -> PNG file written under ``<runtime_dir>/plots`` (the convergence plot, a scan's PES plot)
    plots: dict[str, Path] = field(default_factory=dict)


def process_request(
    request: dict[str, Any],
    settings: Settings,
    *,
    request_topic: str = REQUESTS_TOPIC,
    log: Any = logger,
    steps: Steps = Steps(),
) -> Processed:
    """Admit, simulate, publish and report one request (see the module doc). Raises only for the
    operator's errors (a bad ``QP_MAX_*`` variable) and for failures worth a retry of the op."""
    from qp_assets.vqe.admission import AdmissionLimits, WallClock, admit_request
    from qp_assets.vqe.errors import InputError

    def reject(exc: Exception, stage: str) -> Processed:
        steps.dead_letter(request, str(exc), settings, stage, request_topic)
        log.error("rejected request %r at %s: %s (sent to %s)", request.get("request_id"), stage, exc,
                  REQUESTS_DLQ_TOPIC)  # fmt: skip
        return Processed(
            "rejected",
            {"request_id": request.get("request_id"), "status": "rejected", "error": str(exc)},
            {"status": "rejected", "stage": stage, "error": str(exc)},
        )

    limits = AdmissionLimits.from_env()  # a bad QP_MAX_* is the operator's error: fail, never dead-letter
    try:  # the admission policy (no SCF) and the request's own validation
        admission = admit_request(request, limits)
        molecule, vqe_config, request_id = request_inputs(request)
    except Exception as exc:  # bad input: dead-letter it, never drop it silently
        return reject(exc, "admission")
    log.info("admitted %r: %s", request_id, admission.summary())
    result = reusable_result(request, molecule, vqe_config, settings, log, steps)
    placement_note = "none: the result was reused, nothing simulated"
    if result is None:
        placement = steps.pin(vqe_config.device, settings.runtime_dir / "gpu-locks")
        placement_note = placement.note
        try:
            if vqe_config.device != placement.device and vqe_config.device.upper() != "AUTO":
                log.warning("%s", placement.note)
            vqe_config = dataclasses.replace(vqe_config, device=placement.device)
            monitor = steps.monitor()
            clock = WallClock(limits.max_wall_s)  # stops between iterations; the slot is released below
            if request.get("scan") is not None:
                try:
                    return _process_scan(request, molecule, vqe_config, settings, clock, monitor,
                                         request_topic, log, steps)  # fmt: skip
                finally:
                    if monitor:
                        monitor.stop()
            try:
                result = steps.run(
                    molecule,
                    vqe_config,
                    request_id=request_id,
                    progress=False,
                    performance_snapshots_provider=monitor.snapshots if monitor else None,
                    on_iteration=clock.check,
                )
            except InputError as exc:  # unknown basis, too many qubits, no GPU: dead-letter, not a failure
                return reject(exc, "run")
            finally:
                if monitor:
                    monitor.stop()
        finally:
            placement.release()
    from qp_assets.streaming.publisher import RecordTooLargeError

    try:
        outcome = steps.publish(result, settings)
    except RecordTooLargeError as exc:  # Kafka will never take it: dead-letter the request with the reason
        return reject(RuntimeError(f"result {result.run_id}: {exc}"), "publish")
    acked_at = time.time() if outcome.published else None  # publish returns once Kafka acknowledged
    if not outcome.published:
        # spooled locally (Kafka unreachable); `qp results replay` republishes it - never lost, but say so
        log.warning("result %s spooled to %s: %s", result.run_id, outcome.spool_path, outcome.error)
    status = "published" if outcome.published else "spooled"
    done = Processed(
        status,
        {
            "request_id": request_id,
            "status": status,
            "run_id": result.run_id,
            "molecule": result.molecule_name,
            "total_energy": result.total_energy,
            "error_vs_exact_mha": result.error_vs_exact_mha,
            "device_used": result.device_used,
            "reused_from": result.reused_from,
        },
        {
            "request_id": str(request_id),
            "run_id": result.run_id,
            "molecule": result.molecule_name,
            "total_energy_ha": result.total_energy,
            "exact_energy_ha": result.exact_energy,
            "error_vs_exact_mha": result.error_vs_exact_mha,
            "iterations": len(result.iterations),
            "optimizer_message": str(
                result.optimizer_result.get("message") or ""
            ),  # e.g. the wall-clock stop
            "device_requested": requested_device(request),
            "device_used": result.device_used,
            "placement": placement_note,
            "total_s": result.timings.get("total_s"),
            "experiment_key": str(result.experiment_key or ""),
            "reused_from": str(result.reused_from or ""),
            "result_topic": outcome.topic,
            "published": outcome.published,
            "kafka_partition": outcome.partition if outcome.partition is not None else -1,
            "kafka_offset": outcome.offset if outcome.offset is not None else -1,
        },
        acked_at=acked_at,
    )
    try:
        done.metadata["metrics_pushed"] = steps.push_metrics(result, settings)
    except Exception as exc:  # metrics must not lose a published result
        log.warning("pushing metrics failed: %s", exc)
        done.metadata["metrics_pushed"] = False
    try:
        done.plots["convergence_plot"] = _write_plot(settings, f"{result.run_id}.png", steps.plot(result))
    except Exception as exc:
        log.warning("convergence plot failed: %s", exc)
    log.info("%s: E=%.8f Ha, error vs exact %s mHa on %s%s", result.molecule_name, result.total_energy,
             format_mha(result.error_vs_exact_mha), result.device_used,
             f" (reused from request {result.reused_from})" if result.reused_from else "")  # fmt: skip
    return done


def reuse_refusal(request: dict[str, Any], config: Any) -> str | None:
    """Why ``request`` (with its VQEConfig ``config``) computes without looking anything up, or None when
    an earlier result may be reused: it is a scan (always computes), forced (``force: true``), reuse is off
    (``QP_REUSE_RESULTS=0``) or the run is not reproducible (random without a seed)."""
    from qp_assets.settings import load_env
    from qp_assets.vqe.reuse import is_reproducible

    if request.get("scan") is not None:
        return "a scan"
    if request.get("force"):
        return "forced"
    if not load_env().reuse_results:
        return "reuse off (QP_REUSE_RESULTS)"
    if not is_reproducible(config):
        return "not reproducible (random without a seed)"
    return None


def reusable_result(
    request: dict[str, Any], molecule: Any, config: Any, settings: Settings, log: Any, steps: Steps
) -> Any:
    """The result of ``request`` made from an earlier run of the same experiment key (a VQEResult with
    ``reused_from`` = that run's request id, see ``qp_assets.vqe.reuse``), or None to compute: when
    :func:`reuse_refusal` gives a reason, nothing earlier has the key, or the look-up failed or took over
    ``QP_REUSE_LOOKUP_TIMEOUT_S`` (logged as a warning; never a failed request)."""
    from qp_assets.settings import load_env
    from qp_assets.vqe import reuse
    from qp_assets.vqe.molecule import molecule_key
    from qp_assets.vqe.result import VQEResult

    refusal = reuse_refusal(request, config)
    if refusal is not None:
        log.info("request %r computes: %s", request.get("request_id"), refusal)
        return None
    env = load_env()
    key = reuse.experiment_key(molecule_key(molecule), config)
    started = time.monotonic()
    try:
        found = steps.lookup(settings, key, env.reuse_lookup_timeout_s)
    except Exception as exc:  # the look-up is an optimisation: compute instead, and say why
        log.warning("result look-up of %r failed after %.1f s, computing instead: %s: %s",
                    request.get("request_id"), time.monotonic() - started, type(exc).__name__, exc)  # fmt: skip
        return None
    if found is None:
        log.info("no earlier result of experiment key %s (%.2f s look-up): computing", key[:12],
                 time.monotonic() - started)  # fmt: skip
        return None
    log.info("reusing the result of request %r (run %s) for %r: same experiment key %s (%.2f s look-up)",
             found.earlier.request_id, found.earlier.run_id, request.get("request_id"), key[:12],
             time.monotonic() - started)  # fmt: skip
    record = reuse.reused_record(found.record, request.get("request_id"), found.earlier.request_id)
    return VQEResult.from_record(record)


def _write_plot(settings: Settings, name: str, png: bytes) -> Path:
    path = settings.runtime_dir / "plots" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def _process_scan(
    request: dict,
    molecule: Any,
    vqe_config: Any,
    settings: Settings,
    clock: Any,
    monitor: Any,
    request_topic: str,
    log: Any,
    steps: Steps,
) -> Processed:
    """A scan request: every point in order on this op's device (each warm-started from its neighbours'
    optima, so they cannot fan out), each published as its own result as soon as it is done (request id
    ``<request_id>#<index>``, all sharing the scan id = the request id). Metadata: the scan id, the
    points table and the PES plot. A point that fails to publish for its size is dead-lettered; the
    max wall time (``QP_MAX_WALL_S``) bounds the whole scan."""
    from qp_assets.streaming.publisher import RecordTooLargeError
    from qp_assets.vqe.scan import run_scan, scan_request

    request_id = str(request["request_id"])
    i, j, distances, warm = scan_request(molecule, request["scan"])
    outcomes: list[dict[str, Any]] = []

    def publish(result: Any) -> None:
        try:
            outcome = steps.publish(result, settings)
        except RecordTooLargeError as exc:
            steps.dead_letter({**request, "request_id": result.request_id}, f"result {result.run_id}: {exc}",
                              settings, "publish", request_topic)  # fmt: skip
            outcomes.append({"run_id": result.run_id, "status": "rejected"})
            return
        if not outcome.published:
            log.warning("result %s spooled to %s: %s", result.run_id, outcome.spool_path, outcome.error)
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
    published = [o for o in outcomes if o["status"] != "rejected"]
    done = Processed(
        "published" if published else "rejected",
        {"request_id": request_id, "status": "published" if published else "rejected",
         "scan_id": scan["scan_id"], "run_id": published[-1]["run_id"] if published else None,
         "run_ids": [o["run_id"] for o in published], "molecule": molecule.name,
         "total_energy": min(p["total_energy"] for p in points),
         "error_vs_exact_mha": max(errors) if errors else None, "device_used": vqe_config.device},
        {"request_id": request_id, "scan_id": scan["scan_id"], "molecule": molecule.name,
         "scan_points": len(points), "published": sum(o["status"] == "published" for o in outcomes),
         "max_error_vs_exact_mha": max(errors) if errors else None,
         "iterations": sum(p["num_iterations"] for p in points)},
        markdown={"points": "| distance (A) | energy (Ha) | error vs exact (mHa) | iterations | start | result |\n"
                            "|---|---|---|---|---|---|\n" + rows},
        json={"run_ids": [o["run_id"] for o in outcomes], "result_offsets": outcomes},
    )  # fmt: skip
    try:
        from qp_assets.monitoring.plots import pes_plot_png_bytes

        name = f"scan-{re.sub(r'[^A-Za-z0-9_.-]', '_', request_id)}.png"
        done.plots["pes_plot"] = _write_plot(settings, name, pes_plot_png_bytes(scan))
    except Exception as exc:
        log.warning("PES plot failed: %s", exc)
    log.info("scan %s: %d point(s) of %s, max error vs exact %s mHa", request_id, len(points), molecule.name,
             format_mha(max(errors) if errors else None))  # fmt: skip
    return done
