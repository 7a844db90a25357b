"""GPU discovery and per-process device pinning for the VQE runner ops.

``gpu_ids()`` lists the GPUs this host may use (``CUDA_VISIBLE_DEVICES`` if set, else ``nvidia-smi -L``).
``pin_device()`` claims one of them for the calling process with an exclusive lock file under
``<runtime_dir>/gpu-locks/`` and sets ``CUDA_VISIBLE_DEVICES`` to it, so concurrent op processes never share
a device; with no GPU it returns a CPU placement and the reason (the CPU fallback the op records).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

#: Dagster concurrency pool of the VQE op where its steps take a GPU (``assets.vqe_runner.vqe_pool``).
GPU_POOL = "gpu"


def size_gpu_pool(instance, gpus: int) -> int | None:
    """Give the Dagster instance's pool :data:`GPU_POOL` one slot per GPU of this host, unless its limit was
    set by someone (``dagster instance concurrency set gpu N``, the UI): at the instance's default limit (1)
    a host with four GPUs would run one VQE step at a time. Returns the limit set, or None when left alone (fewer
    than two GPUs, or a limit set explicitly). ``instance`` is a ``DagsterInstance``."""
    if gpus < 2:
        return None
    storage = instance.event_log_storage
    current = next((p for p in storage.get_pool_limits() if p.name == GPU_POOL), None)
    if current is not None and not current.from_default:
        return None
    storage.set_concurrency_slots(GPU_POOL, gpus)
    return gpus


def gpu_ids() -> list[str]:
    """Ids of usable GPUs ([] on CPU-only hosts)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


@dataclass
class Placement:
    """Where one VQE op runs: ``device`` is "GPU" or "CPU"; ``gpu_id`` set for GPU; ``note`` explains."""

    device: str
    gpu_id: str | None
    note: str
    _lock: IO[str] | None = None

    def release(self) -> None:
        if self._lock is not None:
            import fcntl

            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None


def pin_device(requested: str, lock_dir: Path, available: list[str] | None = None) -> Placement:
    """Claim a device for ``requested`` ("CPU", "GPU" or "auto").

    GPU/auto with a free GPU: lock it, set CUDA_VISIBLE_DEVICES and return GPU. No GPU (or all locked):
    return CPU with a note (the recorded fallback). "CPU" always returns CPU.
    """
    import fcntl

    req = requested.upper()
    if req == "CPU":
        return Placement("CPU", None, "CPU requested")
    ids = gpu_ids() if available is None else available
    if not ids:
        return Placement("CPU", None, f"CPU fallback: {requested} requested but no GPU on this host")
    lock_dir.mkdir(parents=True, exist_ok=True)
    for gid in ids:
        handle = open(lock_dir / f"gpu-{gid}.lock", "w")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        os.environ["CUDA_VISIBLE_DEVICES"] = gid
        return Placement("GPU", gid, f"pinned to GPU {gid}", handle)
    return Placement("CPU", None, f"CPU fallback: all {len(ids)} GPU(s) busy")
