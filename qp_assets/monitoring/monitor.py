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
import threading
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
    """

    def __init__(self, interval_s: float = 1.0, *, max_snapshots: int = 10_000) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0 seconds, got {interval_s!r}")
        if max_snapshots < 2:
            raise ValueError(f"max_snapshots must be >= 2, got {max_snapshots!r}")
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

    @property
    def gpu_available(self) -> bool:
        return self._gpu is not None and self._gpu.available

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
        while not self._stop.wait(self.interval_s):
            self._record()


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
