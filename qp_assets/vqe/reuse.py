"""Result reuse, the science side: which runs are the same experiment, and the record that reuses one.

The **experiment key** (``experiment_key`` in the result, 64 hex chars) is a sha256 of everything that
decides a run's numbers:

- the canonical molecule (:func:`qp_assets.vqe.molecule.molecule_key`: symbols, coordinates converted to
  angstrom and rounded to 1e-8, charge, multiplicity, masses; not the name nor the input units);
- the whole configuration except where it runs (``device``, ``kernel``: the sector kernel and Aer, CPU and
  GPU agree to 1e-10, tested): basis, mapper, active space, ansatz, reps, initial state, optimizer and its
  options (tolerances), iteration and evaluation budgets, backend method, shots, noise model, ADAPT
  settings, and the seed;
- the code version (:func:`code_version`): the ``qp-assets`` package version, ``SCIENCE_EPOCH`` and the
  versions of Python and of the simulation stack (qiskit, qiskit-aer, qiskit-nature, PySCF, numpy, scipy,
  numba), as recorded in ``package_versions``.

Unlike ``experiment_id`` (which groups repeats: no seed, no budgets, no versions), two runs with the same key
are expected to give the same result, so the later one may reuse the earlier one instead of simulating.
Runs that are random without a seed (random start, shots, SPSA with ``seed`` null) are never reused.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import uuid
from importlib import metadata
from typing import Any

from qp_assets.vqe.config import VQEConfig
from qp_assets.vqe.result import now_ms

#: Bump when a change under qp_assets/vqe changes results at the same package version (e.g. an optimizer
#: default or a kernel fix), so results of the older code are no longer reused.
SCIENCE_EPOCH = 1

#: Configuration fields that say where a run executes, not what it computes.
PLACEMENT_FIELDS = ("device", "kernel")

_PACKAGES = ("qiskit", "qiskit-aer", "qiskit-aer-gpu", "qiskit-nature", "pyscf", "numpy", "scipy", "numba")


@functools.lru_cache(maxsize=1)
def _package_versions() -> tuple[tuple[str, str], ...]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return tuple(out.items())


def package_versions() -> dict[str, str]:
    """Versions of Python and the simulation stack (read once per process); recorded in every result."""
    return dict(_package_versions())


@functools.cache
def code_version() -> dict[str, str]:
    """The versions that make results differ between code versions (see the module doc; read once per
    process, do not modify the answer)."""
    try:
        own = metadata.version("qp-assets")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        own = "source"
    return {**package_versions(), "qp-assets": own, "science_epoch": str(SCIENCE_EPOCH)}


def experiment_key(
    molecule_key: dict[str, Any], config: VQEConfig, versions: dict[str, str] | None = None
) -> str:
    """sha256 (64 hex chars) of the canonical molecule, the configuration without its placement fields,
    the seed and the code version (``versions``, default :func:`code_version`)."""
    settings = {k: v for k, v in config.to_dict().items() if k not in PLACEMENT_FIELDS}
    payload = json.dumps(
        {
            "molecule": molecule_key,
            "config": settings,
            "code": code_version() if versions is None else versions,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def is_reproducible(config: VQEConfig) -> bool:
    """True when the same inputs give the same numbers: a seed is set, or nothing in the run is random
    (Hartree-Fock or zero start, exact estimation, a deterministic optimizer)."""
    if config.seed is not None:
        return True
    return config.initial_state != "random" and config.shots is None and config.optimizer != "SPSA"


def reused_record(earlier: dict[str, Any], request_id: str | None, reused_from: str) -> dict[str, Any]:
    """The result record of request ``request_id`` made from ``earlier`` (a result record of the same
    experiment key, computed for request ``reused_from``): a new ``run_id``, ``event_time`` and
    ``started_at`` now, ``reused_from`` set; energies, iterations, parameters, timings and versions are the
    earlier computation's, unchanged. A scan point's ``scan_id``/``scan_point`` are dropped (the new request
    is not a point of that scan)."""
    now = now_ms()
    return {
        **earlier,
        "run_id": str(uuid.uuid4()),
        "request_id": request_id,
        "event_time": now,
        "started_at": now,
        "scan_id": None,
        "scan_point": None,
        "reused_from": reused_from,
    }
