"""Potential-energy-surface scans: one VQE per bond length, warm-started from the neighbour's optimum.

The distance between atoms I and J (0-based indices into ``symbols``) is set by moving atom J along the
I->J direction; every other atom stays put. Distances are in angstrom, energies in hartree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from qp_assets.vqe.config import VQEConfig
from qp_assets.vqe.errors import InputError
from qp_assets.vqe.molecule import Molecule
from qp_assets.vqe.runner import run_vqe


def stretched(molecule: Molecule, i: int, j: int, distance: float) -> Molecule:
    """``molecule`` with atom j moved along the i->j axis so that |r_j - r_i| = ``distance`` angstrom
    (coordinates returned in angstrom). Raises InputError naming the field 'stretch' for bad indices."""
    n = len(molecule.symbols)
    if not (0 <= i < n and 0 <= j < n) or i == j:
        raise InputError(
            f"molecule {molecule.name}: field 'stretch' = {i},{j} must be two different atom indices in 0..{n - 1}"
        )
    coords = np.array(molecule.coords_angstrom, dtype=float)
    axis = coords[j] - coords[i]
    coords[j] = coords[i] + axis / np.linalg.norm(axis) * distance
    data = molecule.to_dict()
    data.update(coords=coords.tolist(), units="angstrom")
    return Molecule.from_dict(data)


def scan_distances(start: float, stop: float, points: int) -> list[float]:
    """``points`` evenly spaced distances from ``start`` to ``stop`` angstrom (both included)."""
    if isinstance(points, bool) or not isinstance(points, int) or points < 1:
        raise InputError(f"scan: field 'points' must be an integer >= 1, got {points!r}")
    for name, v in (("from", start), ("to", stop)):
        if not v > 0:
            raise InputError(f"scan: field '{name}' must be a distance > 0 angstrom, got {v!r}")
    return [float(d) for d in np.linspace(start, stop, points)]


#: Previous optima a warm start extrapolates from (a polynomial of degree one less through them).
EXTRAPOLATION_POINTS = 5


def extrapolate(distances: list[float], optima: list[np.ndarray], distance: float) -> np.ndarray:
    """Parameters at ``distance`` from the polynomial through (distances[k], optima[k]) (Lagrange form):
    one point copies it, two extrapolate linearly, three quadratically."""
    start = np.zeros_like(optima[-1])
    for a, (d_a, x_a) in enumerate(zip(distances, optima, strict=True)):
        weight = 1.0
        for b, d_b in enumerate(distances):
            if b != a:
                weight *= (distance - d_b) / (d_a - d_b)
        start += weight * x_a
    return start


def run_scan(
    molecule: Molecule,
    config: VQEConfig,
    i: int,
    j: int,
    distances: list[float],
    *,
    warm_start: bool = True,
    on_point: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """VQE at each distance in order. With ``warm_start`` each point starts from its neighbours' optimal
    parameters: the polynomial through the previous EXTRAPOLATION_POINTS optima (the second point copies
    the first's optimum, the third extrapolates linearly; the first starts from the configured initial state). Without it, and always
    for ansatz adapt (whose ansatz is grown per point), every point starts cold.

    Returns ``{"molecule", "stretch": [i, j], "warm_start", "points": [{distance (angstrom), total_energy,
    hf_energy, exact_energy, error_vs_exact_mha, num_iterations, num_evaluations, vqe_s, success,
    initial_point ("warm" | "cold")}]}``.
    """
    points: list[dict[str, Any]] = []
    optima: list[np.ndarray] = []  # optimal parameters of the points so far
    for k, distance in enumerate(distances):
        geometry = stretched(molecule, i, j, distance)
        start = None
        if warm_start and config.ansatz != "adapt" and optima:
            start = extrapolate(
                distances[max(0, k - EXTRAPOLATION_POINTS) : k], optima[-EXTRAPOLATION_POINTS:], distance
            )
        result = run_vqe(geometry, config, progress=False, initial_point=start)
        point = {
            "distance": distance,
            "total_energy": result.total_energy,
            "hf_energy": result.hf_energy,
            "exact_energy": result.exact_energy,
            "error_vs_exact_mha": result.error_vs_exact_mha,
            "num_iterations": result.optimizer_result["nit"],
            "num_evaluations": result.optimizer_result["nfev"],
            "vqe_s": result.timings["vqe_s"],
            "success": result.optimizer_result["success"],
            "initial_point": "cold" if start is None else "warm",
        }
        points.append(point)
        if on_point is not None:
            on_point(point)
        optima.append(np.asarray(result.optimal_parameters))
    return {"molecule": molecule.name, "stretch": [i, j], "warm_start": warm_start, "points": points}
