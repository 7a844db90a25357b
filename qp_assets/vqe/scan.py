"""Potential-energy-surface scans: one VQE per bond length, warm-started from the neighbour's optimum.

The distance between atoms I and J (0-based indices into ``symbols``) is set by moving atom J along the
I->J direction; every other atom stays put. Distances are in angstrom, energies in hartree.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from qp_assets.vqe.config import VQEConfig
from qp_assets.vqe.errors import InputError
from qp_assets.vqe.molecule import Molecule


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


#: Most points one scan may have (a scan request runs them one after the other in one op).
MAX_SCAN_POINTS = 101


def scan_distances(start: float, stop: float, points: int) -> list[float]:
    """``points`` evenly spaced distances from ``start`` to ``stop`` angstrom (both included)."""
    if isinstance(points, bool) or not isinstance(points, int) or not 1 <= points <= MAX_SCAN_POINTS:
        raise InputError(f"scan: field 'points' must be an integer in 1..{MAX_SCAN_POINTS}, got {points!r}")
    for name, v in (("from", start), ("to", stop)):
        if not v > 0:
            raise InputError(f"scan: field '{name}' must be a distance > 0 angstrom, got {v!r}")
    return [float(d) for d in np.linspace(start, stop, points)]


def scan_request(molecule: Molecule, scan: Mapping[str, Any]) -> tuple[int, int, list[float], bool]:
    """(i, j, distances in angstrom, warm_start) of a request's ``scan`` record (``atoms`` [I, J], ``start``,
    ``stop`` angstrom, ``points``, ``warm_start``); raises InputError naming the field. Every geometry is
    checked here (atoms closer than the molecule rules allow are refused before any simulation)."""
    atoms = scan.get("atoms")
    if not isinstance(atoms, list | tuple) or len(atoms) != 2 or not all(isinstance(a, int) for a in atoms):
        raise InputError(f"scan: field 'atoms' must be two atom indices [I, J], got {atoms!r}")
    distances = scan_distances(scan.get("start"), scan.get("stop"), scan.get("points"))
    for distance in distances:
        stretched(molecule, atoms[0], atoms[1], distance)
    return atoms[0], atoms[1], distances, bool(scan.get("warm_start", True))


def point_request_id(request_id: str, index: int) -> str:
    """The request id a scan request's point ``index`` (0-based) carries in its result: ``<request_id>#<index>``.

    One id per point keeps "one row per request_id" (feature tables, ``qp audit``) true for scans."""
    return f"{request_id}#{index}"


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


#: Bounds of the expected distance of a warm start from its optimum (radians) given to the optimizer, and
#: the safety factor on the extrapolation's error estimate (a first trial step somewhat longer than the
#: distance lets the line search interpolate to the minimum; shorter ones must expand first). H2 scan,
#: 21 points: factor 0.25 / 1 / 4 / 10 -> 36 / 30 / 24 / 25 warm iterations, 66 / 63 / 64 / 65 evaluations.
MIN_STEP, MAX_STEP = 1e-6, 0.5
STEP_SAFETY = 4.0


def extrapolation_error(distances: list[float], optima: list[np.ndarray], distance: float) -> float | None:
    """How far the warm start at ``distance`` is expected to be from its optimum (radians): the difference
    between the extrapolation through the last EXTRAPOLATION_POINTS optima and the one through one fewer
    (the usual estimate of a polynomial extrapolation's error) times STEP_SAFETY, kept within [MIN_STEP,
    MAX_STEP]; None with fewer than two optima (no estimate: the optimizer's own first step)."""
    n = min(EXTRAPOLATION_POINTS, len(optima))
    if n < 2:
        return None
    best = extrapolate(distances[-n:], optima[-n:], distance)
    coarser = extrapolate(distances[-n + 1 :], optima[-n + 1 :], distance)
    return float(np.clip(STEP_SAFETY * np.linalg.norm(best - coarser), MIN_STEP, MAX_STEP))


def run_scan(
    molecule: Molecule,
    config: VQEConfig,
    i: int,
    j: int,
    distances: list[float],
    *,
    warm_start: bool = True,
    on_point: Callable[[dict[str, Any]], None] | None = None,
    scan_id: str | None = None,
    on_result: Callable[[Any], None] | None = None,
    request_id: str | None = None,
    **run_kwargs: Any,
) -> dict[str, Any]:
    """VQE at each distance in order. With ``warm_start`` each point starts from its neighbours' optimal
    parameters: the polynomial through the previous EXTRAPOLATION_POINTS optima (the second point copies
    the first's optimum, the third extrapolates linearly; the first starts from the configured initial state). Without it, and always
    for ansatz adapt (whose ansatz is grown per point), every point starts cold.

    Every point's ``VQEResult`` carries ``scan_id`` (given, else a new UUID) and its ``scan_point``; with
    ``request_id`` its request id is :func:`point_request_id`. ``on_result`` gets each ``VQEResult`` (e.g. to
    publish it), ``run_kwargs`` go to ``run_vqe`` (e.g. ``on_iteration``).

    Returns ``{"molecule", "stretch": [i, j], "warm_start", "scan_id", "points": [{distance (angstrom),
    total_energy, hf_energy, exact_energy, error_vs_exact_mha, num_iterations, num_evaluations, vqe_s,
    success, initial_point ("warm" | "cold"), run_id}]}``.
    """
    from qp_assets.vqe.runner import run_vqe  # the simulator's imports only when a scan runs

    scan_id = scan_id or str(uuid.uuid4())
    points: list[dict[str, Any]] = []
    optima: list[np.ndarray] = []  # optimal parameters of the points so far
    for k, distance in enumerate(distances):
        geometry = stretched(molecule, i, j, distance)
        start = step = None
        if warm_start and config.ansatz != "adapt" and optima:
            start = extrapolate(
                distances[max(0, k - EXTRAPOLATION_POINTS) : k], optima[-EXTRAPOLATION_POINTS:], distance
            )
            step = extrapolation_error(distances[:k], optima, distance)
        rid = None if request_id is None else point_request_id(request_id, k)
        result = run_vqe(geometry, config, progress=False, initial_point=start, initial_step=step,
                         request_id=rid, **run_kwargs)  # fmt: skip
        result.scan_id = scan_id
        result.scan_point = {"index": k, "num_points": len(distances), "atoms": [i, j], "distance": distance}
        if on_result is not None:
            on_result(result)
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
            "run_id": result.run_id,
        }
        points.append(point)
        if on_point is not None:
            on_point(point)
        optima.append(np.asarray(result.optimal_parameters))
    return {"molecule": molecule.name, "stretch": [i, j], "warm_start": warm_start, "scan_id": scan_id,
            "points": points}  # fmt: skip
