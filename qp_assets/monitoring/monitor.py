"""Performance monitor: a daemon thread sampling system and process resources during a VQE run.

Each sample is a dict shaped exactly like the ``PerformanceSnapshot`` record of
``qp_assets/streaming/schemas/vqe_result_v3.avsc``:

``timestamp`` (int, ms since the epoch, UTC), ``cpu_percent`` (system-wide, 0-100),
``memory_percent`` (system-wide used RAM, 0-100), ``process_rss_bytes`` (this process),
``gpu_utilization_percent`` (float 0-100 or None), ``gpu_memory_used_bytes`` (int or None).

GPU values come from NVIDIA NVML (``pynvml`` from the optional ``nvidia-ml-py`` package) when a GPU is
present; no NVML / no GPU simply gives ``None``. Sampling costs ~0.1 ms per tick on the monitoring thread
(psutil reads /proc); the monitored code never waits on it.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import re
import socket
import threading
import time
from types import TracebackType
from typing import Any

import psutil

log = logging.getLogger(__name__)

SNAPSHOT_FIELDS = (
    "timestamp",
    "cpu_percent",
    "memory_percent",
    "process_rss_bytes",
    "gpu_utilization_percent",
    "gpu_memory_used_bytes",
)


def _now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


class SystemCpuMeter:
    """System-wide CPU % since the previous call, from /proc/stat deltas (own state, unlike
    ``psutil.cpu_percent(interval=None)`` whose module-global state other callers would reset)."""

    def __init__(self) -> None:
        self._last = self._read()

    @staticmethod
    def _read() -> tuple[float, float]:
        times = psutil.cpu_times()
        total = float(sum(times))
        idle = float(times.idle) + float(getattr(times, "iowait", 0.0))
        return total, total - idle

    def percent(self) -> float:
        """Busy share of all CPUs since the last call (0-100); 0.0 when no time has elapsed."""
        total, busy = self._read()
        last_total, last_busy = self._last
        self._last = (total, busy)
        elapsed = total - last_total
        if elapsed <= 0:
            return 0.0
        return max(0.0, min(100.0, 100.0 * (busy - last_busy) / elapsed))


class GpuSampler:
    """NVML reader for all visible NVIDIA GPUs; ``available`` is False without NVML or GPU (never raises)."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[Any] = []
        try:
            import pynvml  # optional: nvidia-ml-py

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._nvml = pynvml
        except Exception as exc:  # ImportError, NVMLError (no driver / no GPU)
            log.debug("NVML not available, GPU metrics disabled: %s", exc)
            self._handles = []

    @property
    def available(self) -> bool:
        return bool(self._handles)

    def sample(self) -> tuple[float | None, int | None]:
        """(mean utilisation % over GPUs, total used memory bytes) or (None, None)."""
        if not self._handles:
            return None, None
        try:
            utils = [float(self._nvml.nvmlDeviceGetUtilizationRates(h).gpu) for h in self._handles]
            used = sum(int(self._nvml.nvmlDeviceGetMemoryInfo(h).used) for h in self._handles)
            return sum(utils) / len(utils), used
        except Exception as exc:  # a GPU falling off the bus must not break the run
            log.debug("NVML sample failed: %s", exc)
            return None, None

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass
            self._nvml = None
            self._handles = []


class PerformanceMonitor:
    """Background sampler of CPU %, memory %, process RSS and GPU utilisation/memory.

    Use as a context manager (``with PerformanceMonitor(1.0) as mon: ...; mon.snapshots()``) or with
    ``start()``/``stop()``. ``interval_s`` is the sampling period in seconds (> 0). Samples are taken every
    ``interval_s`` after start and once at stop, so even runs shorter than ``interval_s`` have a snapshot. At most
    ``max_snapshots`` are kept (oldest dropped). ``cpu_percent`` of a sample is the system-wide CPU use
    since the previous sample.

    Live metrics (optional): with ``push_url`` (PushGateway ``host:port``/URL or Settings), the sampler
    thread also pushes the latest sample every ``push_every_s`` seconds as ``quantum_live_*`` gauges to
    the group ``job=quantum_pipeline_live, host=<hostname>, pid=<pid>`` with ``live_labels`` (e.g.
    ``{"molecule": "H2"}``) as labels, and deletes that group on stop. Pushes run on the sampler thread with
    a bounded timeout; an outage is logged once and never reaches the monitored code.
    """

    def __init__(
        self,
        interval_s: float = 1.0,
        *,
        max_snapshots: int = 10_000,
        push_url: Any = None,
        push_every_s: float = 15.0,
        live_labels: dict[str, str] | None = None,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0 seconds, got {interval_s!r}")
        if max_snapshots < 2:
            raise ValueError(f"max_snapshots must be >= 2, got {max_snapshots!r}")
        if not push_every_s > 0:
            raise ValueError(f"push_every_s must be > 0 seconds, got {push_every_s!r}")
        self._live = LivePusher(push_url, live_labels or {}) if push_url is not None else None
        self.push_every_s = float(push_every_s)
        self.interval_s = float(interval_s)
        self._snapshots: collections.deque[dict[str, Any]] = collections.deque(maxlen=max_snapshots)
        self._lock = threading.Lock()
        self._sample_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = psutil.Process()
        self._gpu: GpuSampler | None = None
        self._cpu = SystemCpuMeter()

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> PerformanceMonitor:
        """Start sampling (idempotent while running); returns self."""
        if self.running:
            return self
        self._stop.clear()
        self._gpu = GpuSampler()
        self._cpu = SystemCpuMeter()  # each sample's CPU % covers the time since the previous one
        self._thread = threading.Thread(target=self._loop, name="qp-performance-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[dict[str, Any]]:
        """Stop sampling, take a final sample and return all snapshots (idempotent)."""
        thread = self._thread
        if thread is not None:
            self._stop.set()
            thread.join(timeout=max(5.0, 2 * self.interval_s))
            self._thread = None
            self._record()
            if self._gpu is not None:
                self._gpu.close()
            if self._live is not None:
                self._live.finish()
        return self.snapshots()

    def __enter__(self) -> PerformanceMonitor:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ data
    def snapshots(self) -> list[dict[str, Any]]:
        """Copy of the snapshots so far (PerformanceSnapshot dicts, oldest first); safe while running.

        While running, a fresh sample is recorded first, so a run that asks at its end (as
        ``run_vqe(performance_snapshots_provider=monitor.snapshots)`` does) always gets its end state,
        even when it was shorter than ``interval_s``.
        """
        if self.running:
            self._record()
        with self._lock:
            return [dict(s) for s in self._snapshots]

    def sample(self) -> dict[str, Any]:
        """Take one snapshot now (without storing it)."""
        vm = psutil.virtual_memory()
        try:
            rss = int(self._process.memory_info().rss)
        except psutil.Error:
            rss = 0
        gpu_util, gpu_mem = self._gpu.sample() if self._gpu is not None else (None, None)
        return {
            "timestamp": _now_ms(),
            "cpu_percent": self._cpu.percent(),
            "memory_percent": float(vm.percent),
            "process_rss_bytes": rss,
            "gpu_utilization_percent": gpu_util,
            "gpu_memory_used_bytes": gpu_mem,
        }

    def _record(self) -> None:
        with self._sample_lock:  # the sampler thread and snapshots() may both record
            try:
                snap = self.sample()
            except Exception as exc:  # never let monitoring break the monitored run
                log.debug("performance sample failed: %s", exc)
                return
            with self._lock:
                self._snapshots.append(snap)

    def _loop(self) -> None:
        last_push = float("-inf")
        while not self._stop.wait(self.interval_s):
            self._record()
            if self._live is not None and time.monotonic() - last_push >= self.push_every_s:
                last_push = time.monotonic()
                with self._lock:
                    latest = dict(self._snapshots[-1]) if self._snapshots else None
                if latest is not None:
                    self._live.push(latest)


LIVE_JOB = "quantum_pipeline_live"
LIVE_METRICS = {
    "quantum_live_cpu_percent": ("cpu_percent", "System-wide CPU use of a host with a running VQE (%)."),
    "quantum_live_memory_percent": (
        "memory_percent",
        "System-wide memory use of a host with a running VQE (%).",
    ),
    "quantum_live_process_rss_bytes": (
        "process_rss_bytes",
        "Resident memory of a running VQE process (bytes).",
    ),
    "quantum_live_gpu_utilization_percent": (
        "gpu_utilization_percent",
        "GPU utilisation during a running VQE (%).",
    ),
    "quantum_live_gpu_memory_used_bytes": (
        "gpu_memory_used_bytes",
        "GPU memory used during a running VQE (bytes).",
    ),
    "quantum_live_timestamp_seconds": ("timestamp", "When the live sample was taken (unix seconds)."),
}


class LivePusher:
    """Pushes live samples of one monitored process to ``job=quantum_pipeline_live, host, pid``."""

    def __init__(
        self,
        push_url: Any,
        labels: dict[str, str],
        timeout_s: float = 2.0,
        grouping_key: dict[str, str] | None = None,
    ) -> None:
        from qp_assets.monitoring.metrics import gateway_url

        self.url = gateway_url(push_url)
        self.labels = {_label_name(k): str(v) for k, v in labels.items()}
        self.grouping_key = grouping_key or {"host": socket.gethostname(), "pid": str(os.getpid())}
        self.timeout_s = timeout_s
        self.pushed = False
        self.last_ok = False

    def push(self, snapshot: dict[str, Any]) -> bool:
        from prometheus_client import CollectorRegistry, Gauge
        from prometheus_client.exposition import push_to_gateway

        from qp_assets.monitoring.metrics import _bounded, _note_outage, _note_success

        registry = CollectorRegistry()
        names = list(self.labels)
        for name, (key, help_text) in LIVE_METRICS.items():
            value = snapshot.get(key)
            if value is None:
                continue
            if key == "timestamp":
                value = value / 1000.0
            Gauge(name, help_text, names, registry=registry).labels(**self.labels).set(float(value))

        def go() -> None:
            push_to_gateway(self.url, job=LIVE_JOB, registry=registry, grouping_key=self.grouping_key,
                            timeout=self.timeout_s)  # fmt: skip

        try:
            _bounded(go, self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - never disturb the monitored run
            _note_outage(self.url, exc)
            self.last_ok = False
            return False
        _note_success()
        self.pushed = self.last_ok = True
        return True

    def finish(self) -> None:
        """Delete the live group (only if the last push worked, so an outage costs the run nothing)."""
        if not (self.pushed and self.last_ok):
            return
        from qp_assets.monitoring.metrics import _bounded, delete_group

        try:
            _bounded(lambda: delete_group(self.url, self.grouping_key, job=LIVE_JOB, timeout_s=0.5), 0.5)
        except Exception as exc:  # noqa: BLE001 - leftover live groups are removed by cleanup
            log.debug("could not delete live metrics group %s: %s", self.grouping_key, exc)


def _label_name(key: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9_]", "_", str(key))
    if not name or name[0].isdigit() or name.startswith("__") or name in ("host", "pid", "job"):
        raise ValueError(f"live_labels: {key!r} is not a usable Prometheus label name")
    return name


def summarize_snapshots(snapshots: list[dict[str, Any]]) -> dict[str, float | None]:
    """Aggregate snapshots of one run: mean CPU %, peak memory %, peak RSS bytes, mean/peak GPU values.

    Keys: cpu_percent_mean, cpu_percent_max, memory_percent_max, process_rss_bytes_max,
    gpu_utilization_percent_mean, gpu_memory_used_bytes_max (None when there is no data).
    """

    def values(key: str) -> list[float]:
        return [float(s[key]) for s in snapshots if s.get(key) is not None]

    cpu, mem, rss = values("cpu_percent"), values("memory_percent"), values("process_rss_bytes")
    gpu_u, gpu_m = values("gpu_utilization_percent"), values("gpu_memory_used_bytes")
    return {
        "cpu_percent_mean": sum(cpu) / len(cpu) if cpu else None,
        "cpu_percent_max": max(cpu) if cpu else None,
        "memory_percent_max": max(mem) if mem else None,
        "process_rss_bytes_max": max(rss) if rss else None,
        "gpu_utilization_percent_mean": sum(gpu_u) / len(gpu_u) if gpu_u else None,
        "gpu_memory_used_bytes_max": max(gpu_m) if gpu_m else None,
    }
