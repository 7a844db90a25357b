"""run_vqe: one VQE simulation end to end (molecule + configuration -> :class:`VQEResult`)."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController
from tqdm import tqdm

from qp_assets.vqe import reuse, sector_kernel
from qp_assets.vqe.adapt import inner_options, operator_label, run_adapt, sector_ansatz_for
from qp_assets.vqe.ansatz import (
    ansatz_qasm3,
    build_ansatz,
    excitation_circuit,
    initial_parameters,
    sector_ansatz,
)
from qp_assets.vqe.config import CHEMISTRY_ANSATZES, GRADIENT_OPTIMIZERS, VQEConfig, experiment_id
from qp_assets.vqe.errors import InputError
from qp_assets.vqe.exact import (
    EXACT_METHOD,
    MAX_SECTOR_DIM,
    MAX_SPARSE_EXACT_DIM,
    exact_sector_energy,
    sector_dimension,
)
from qp_assets.vqe.fast_jw import jordan_wigner
from qp_assets.vqe.hamiltonian import QubitProblem, build_problem
from qp_assets.vqe.molecule import Molecule, molecule_key, molecule_record
from qp_assets.vqe.noise import build_noise_model, parse_noise
from qp_assets.vqe.optimizers import BudgetExceeded, run_scipy, run_spsa
from qp_assets.vqe.result import VQEResult, now_ms
from qp_assets.vqe.sector_kernel import SectorAnsatz, SectorEnergyEvaluator, SectorHamiltonian
from qp_assets.vqe.simulator import AerEnergyEvaluator, check_memory, estimate_memory_bytes, resolve_device

log = logging.getLogger(__name__)

#: Noisy sampled runs on up to this many qubits use Aer's density-matrix method (4^n amplitudes).
DENSITY_MATRIX_MAX_QUBITS = 12


@functools.cache
def _blas_threads() -> ThreadpoolController:
    """The thread pools of the loaded BLAS/OpenMP libraries (found once: 5 ms; a limit then costs 0.03 ms).
    First called from ``run_vqe`` after numpy, scipy.optimize and PySCF are loaded."""
    return ThreadpoolController()


def exact_reference(
    problem: QubitProblem, config: VQEConfig, hamiltonian: SectorHamiltonian | None = None
) -> tuple[float | None, str]:
    """Exact total energy of the active space (hartree) and the method, or (None, "none") above
    MAX_SECTOR_DIM. Up to MAX_SPARSE_EXACT_DIM from the Jordan-Wigner operator (independent of the
    sector kernel's Hamiltonian); above it PySCF's FCI solver on the integrals."""
    dim = sector_dimension(problem.num_spatial_orbitals, problem.num_particles)
    if dim > MAX_SECTOR_DIM:
        return None, "none"
    if dim > MAX_SPARSE_EXACT_DIM and problem.integrals is not None:
        if hamiltonian is None:
            space = sector_kernel.SectorSpace(problem.num_spatial_orbitals, *problem.num_particles)
            hamiltonian = SectorHamiltonian(space, *problem.integrals)
        energy, method = hamiltonian.ground_energy()
        return energy + problem.energy_shift, method
    if config.mapper == "jordan_wigner":
        jw = problem.qubit_op
    else:
        jw = jordan_wigner(problem.fermionic_op, 2 * problem.num_spatial_orbitals)
    e = exact_sector_energy(jw, problem.num_spatial_orbitals, problem.num_particles)
    return (None, "none") if e is None else (e + problem.energy_shift, EXACT_METHOD)


def select_sector_ansatz(
    config: VQEConfig, device_used: str, problem: QubitProblem, ansatz
) -> SectorAnsatz | None:
    """The electron-sector form of the run's ansatz when ``config.kernel`` allows and the run fits it
    (UCC-family ansatz, exact estimation, statevector method, CPU, spin-free integrals); None means Aer.
    ``kernel='sector'`` on a run that does not fit is an InputError naming the reason."""
    adapt = config.ansatz == "adapt"
    if config.kernel == "aer":
        if adapt:
            raise InputError("config: field 'kernel' = 'aer' is not possible with ansatz 'adapt' "
                             "(ADAPT-VQE runs on the sector kernel)")  # fmt: skip
        return None
    reasons = []
    if config.shots is not None:
        reasons.append(f"shots = {config.shots} (sampling{' and noise' if config.noise else ''} run on Aer)")
    if config.backend_method != "statevector":
        reasons.append(f"backend_method = {config.backend_method!r}")
    if device_used != "CPU":
        reasons.append(f"device = {device_used!r} (GPU runs on Aer)")
    if problem.integrals is None:
        reasons.append("alpha and beta integrals differ")
    sector = None if reasons else sector_ansatz(ansatz, problem)
    if sector is None and not reasons:
        reasons.append(f"ansatz {config.ansatz!r} is not a product of excitation rotations on the HF state")
    if reasons and (config.kernel == "sector" or adapt):
        name, value = ("ansatz", "adapt") if adapt else ("kernel", "sector")
        raise InputError(f"config: field '{name}' = '{value}' is not possible here: {'; '.join(reasons)}")
    return sector


def _recorded_options(config: VQEConfig) -> dict[str, Any]:
    """Optimizer options as recorded; for ADAPT-VQE its re-optimisations' options (the ADAPT settings and
    chosen operators are the result's ``adapt`` record)."""
    if config.ansatz != "adapt":
        return dict(config.optimizer_options)
    return inner_options(config.optimizer, config.optimizer_options)


class _Objective:
    """Wraps the evaluator: counts evaluations, caches recent points, enforces max_evaluations."""

    def __init__(
        self, evaluator: AerEnergyEvaluator, shift: float, gradient: bool, max_evaluations: int | None
    ):
        self.ev = evaluator
        self.shift = shift
        self.gradient = gradient
        self.max_evaluations = max_evaluations
        self.nfev = 0
        self.cache: dict[bytes, tuple[float, float | None, np.ndarray | None]] = {}
        self.best: tuple[float, np.ndarray] | None = None

    def evaluate(self, x: np.ndarray, need_gradient: bool) -> tuple[float, float | None, np.ndarray | None]:
        key = np.asarray(x, dtype=float).tobytes()
        hit = self.cache.get(key)
        if hit is not None and (hit[2] is not None or not need_gradient):
            return hit
        if self.max_evaluations is not None and self.nfev >= self.max_evaluations:
            raise BudgetExceeded(f"max_evaluations ({self.max_evaluations}) reached")
        self.nfev += 1
        std: float | None = None
        grad = None
        if self.ev.shots is not None:
            e, std = self.ev.energy_sampled(x)
        elif need_gradient:
            e, grad = self.ev.energy_and_gradient(x)
        else:
            e = self.ev.energy_exact(x)
        out = (e + self.shift, std, grad)
        if len(self.cache) > 8:
            self.cache.pop(next(iter(self.cache)))
        self.cache[key] = out
        if self.best is None or out[0] < self.best[0]:
            self.best = (out[0], np.array(x, dtype=float))
        return out

    def __call__(self, x: np.ndarray):
        e, _std, grad = self.evaluate(x, self.gradient)
        return (e, grad) if self.gradient else e


def run_vqe(
    molecule: Molecule,
    config: VQEConfig,
    *,
    request_id: str | None = None,
    progress: bool = True,
    on_iteration: Callable[[dict[str, Any]], None] | None = None,
    performance_snapshots_provider: Callable[[], list[dict[str, Any]]] | None = None,
    use_aer: bool = True,
    initial_point: np.ndarray | None = None,
    initial_step: float | None = None,
) -> VQEResult:
    """Run one VQE simulation; energies in hartree, times in seconds.

    ``on_iteration`` receives each iteration record (schema Iteration) as it happens;
    ``performance_snapshots_provider()`` is called once at the end to fill ``performance_snapshots``.
    ``use_aer=False`` computes statevectors with the numpy engine instead of Aer (diagnostics only).
    ``initial_point`` (radians, one per ansatz parameter) replaces the configured initial state's
    parameters, e.g. a neighbouring geometry's optimum in a scan (not with ansatz adapt); ``initial_step``
    (radians) is how far from its optimum it is expected to be: L-BFGS-B's first trial step gets that
    length instead of 1 rad (see ``optimizers.run_scipy``'s ``step_scale``).
    Raises :class:`InputError` on bad input or when the problem would not fit in memory.
    The algorithm is :func:`simulate`, the record :func:`build_result`.
    """
    sim = simulate(molecule, config, progress=progress, on_iteration=on_iteration, use_aer=use_aer,
                   initial_point=initial_point, initial_step=initial_step)  # fmt: skip
    snapshots = list(performance_snapshots_provider()) if performance_snapshots_provider else []
    return build_result(sim, molecule, config, request_id=request_id, performance_snapshots=snapshots,
                        reusable=initial_point is None)  # fmt: skip


@dataclass
class Simulation:
    """What :func:`simulate` computed (energies in hartree, times in seconds): the input to
    :func:`build_result`. ``ansatz`` is the final circuit (grown, for ADAPT); ``circuit`` the one recorded
    as OpenQASM 3 (Aer's transpiled circuit on the Aer path)."""

    problem: QubitProblem
    ansatz: Any
    circuit: Any
    device_used: str
    kernel: str
    x0: np.ndarray
    x_final: np.ndarray
    iterations: list[dict[str, Any]]
    final_energy: float
    exact: float | None
    exact_method: str | None
    success: bool
    message: str
    nfev: int
    adapt_operators: list[str]
    started_at: int
    t_start: float
    vqe_s: float
    exact_s: float


def simulate(
    molecule: Molecule,
    config: VQEConfig,
    *,
    progress: bool = True,
    on_iteration: Callable[[dict[str, Any]], None] | None = None,
    use_aer: bool = True,
    initial_point: np.ndarray | None = None,
    initial_step: float | None = None,
) -> Simulation:
    """The algorithm of :func:`run_vqe` (same arguments, see there): problem, ansatz, exact reference,
    optimisation and the final energy, as a :class:`Simulation`; no record is built here."""
    config.validate()
    t_start = time.perf_counter()
    started_at = now_ms()
    device_used = (
        "CPU" if config.ansatz == "adapt" and config.device == "auto" else resolve_device(config.device)
    )
    if config.backend_method == "matrix_product_state" and device_used == "GPU":
        if config.device == "GPU":
            raise InputError(
                "config: field 'device' = 'GPU' is not supported with backend_method matrix_product_state"
            )
        device_used = "CPU"

    problem = build_problem(molecule, config)
    ansatz = build_ansatz(problem, config)
    num_qubits = ansatz.num_qubits
    t_setup = time.perf_counter()  # the kernel's tables and Hamiltonian count as VQE time
    sector = select_sector_ansatz(config, device_used, problem, ansatz)
    sector_setup_s = time.perf_counter() - t_setup
    if sector is not None:
        needed = sector_kernel.estimate_memory_bytes(sector.space, sector.tables.nbytes)
    else:
        needed = estimate_memory_bytes(num_qubits, problem.qubit_op, ansatz.size(), config.shots is not None)
    check_memory(molecule.name, num_qubits, needed)

    t_setup = time.perf_counter()  # built once, shared with the exact reference
    sector_h = None if sector is None else SectorHamiltonian(sector.space, *problem.integrals)
    sector_setup_s += time.perf_counter() - t_setup

    t_exact = time.perf_counter()
    exact, exact_method = exact_reference(problem, config, sector_h)
    exact_s = time.perf_counter() - t_exact

    t_vqe = time.perf_counter()
    evaluator: AerEnergyEvaluator | SectorEnergyEvaluator
    if sector is not None:
        evaluator = SectorEnergyEvaluator(sector, sector_h)
    else:
        noise_model = None if config.noise is None else build_noise_model(parse_noise(config.noise))
        # noisy sampling: the density matrix up to DENSITY_MATRIX_MAX_QUBITS (one simulation per circuit
        # instead of one noisy trajectory per shot), the configured method above
        noisy_dm = noise_model is not None and config.backend_method == "statevector"
        method = (
            "density_matrix"
            if noisy_dm and num_qubits <= DENSITY_MATRIX_MAX_QUBITS
            else config.backend_method
        )
        evaluator = AerEnergyEvaluator(
            ansatz, problem.qubit_op, method=method, device=device_used,
            shots=config.shots, seed=config.seed, use_aer=use_aer, noise_model=noise_model,
            basis_gates=None if config.noise is None or not config.noise.startswith("fake:")
            else noise_model.basis_gates,
        )  # fmt: skip
    x0 = initial_parameters(config, ansatz.num_parameters)
    if initial_point is not None:
        if config.ansatz == "adapt" or len(initial_point) != ansatz.num_parameters:
            raise InputError(
                f"config: field 'initial_point' has {len(initial_point)} values; ansatz {config.ansatz!r} "
                f"starts with {ansatz.num_parameters} parameters"
            )
        x0 = np.asarray(initial_point, dtype=float).copy()
    with_gradient = config.shots is None and config.optimizer in GRADIENT_OPTIMIZERS
    objective = _Objective(evaluator, problem.energy_shift, with_gradient, config.max_evaluations)

    iterations: list[dict[str, Any]] = []
    previous = {"x": x0.copy(), "min": np.inf}
    bar = tqdm(total=config.max_iterations, desc=f"VQE {molecule.name}", unit="it", disable=not progress,
               leave=False)  # fmt: skip

    def record_iteration(x: np.ndarray) -> None:
        energy, std, grad = objective.evaluate(x, need_gradient=False)
        if grad is None:
            hit = objective.cache.get(np.asarray(x, dtype=float).tobytes())
            grad = hit[2] if hit else None
        previous["min"] = min(previous["min"], energy)
        rec = {
            "iteration": len(iterations) + 1,
            "energy": float(energy),
            "std": None if std is None else float(std),
            "gradient_norm": None if grad is None else float(np.linalg.norm(grad)),
            "parameter_delta_norm": float(np.linalg.norm(x - previous["x"])),
            "cumulative_min_energy": float(previous["min"]),
            "nfev": objective.nfev,
            "parameters": [float(v) for v in x],
            "timestamp": now_ms(),
            "operator": None,
        }
        previous["x"] = np.array(x, dtype=float)
        iterations.append(rec)
        bar.update(1)
        bar.set_postfix(E=f"{energy:.6f}")
        if on_iteration is not None:
            on_iteration(rec)
        spsa_done = config.optimizer == "SPSA"  # SPSA runs exactly max_iterations and ends by itself
        if config.max_iterations is not None and len(iterations) >= config.max_iterations and not spsa_done:
            raise BudgetExceeded(f"max_iterations ({config.max_iterations}) reached")

    success, message = True, ""
    adapt_operators: list[str] = []
    # Sector-kernel runs do small dense algebra between compiled sweeps (L-BFGS-B's updates, vdot): with
    # OpenBLAS's threads on a busy 2-core machine that cost 4 ms per L-BFGS-B call at 150 parameters
    # (0.05-0.3 ms on one thread) and was the largest item of an N2 fc ADAPT run. PySCF's H psi keeps its
    # own OpenMP threads (not BLAS); Aer runs are not limited.
    blas = (
        _blas_threads().limit(limits=1, user_api="blas") if sector is not None else contextlib.nullcontext()
    )
    with blas:
        try:
            if config.ansatz == "adapt":

                def record_step(step: dict[str, Any]) -> None:
                    x = step["parameters"]
                    previous["min"] = min(previous["min"], step["energy"])
                    rec = {
                        "iteration": step["step"],
                        "energy": float(step["energy"]),
                        "std": None,
                        "gradient_norm": step["pool_gradient"],  # |dE/dtheta| that selected the operator
                        "parameter_delta_norm": float(np.linalg.norm(x - np.append(previous["x"], 0.0))),
                        "cumulative_min_energy": float(previous["min"]),
                        "nfev": step["nfev"],
                        "parameters": [float(v) for v in x],
                        "timestamp": now_ms(),
                        "operator": step["operator"],
                    }
                    previous["x"] = np.array(x, dtype=float)
                    iterations.append(rec)
                    bar.update(1)
                    bar.set_postfix(E=f"{step['energy']:.6f}", op=step["operator"])
                    if on_iteration is not None:
                        on_iteration(rec)

                grown = run_adapt(
                    sector_h, energy_shift=problem.energy_shift, gradient_threshold=config.adapt_gradient_threshold,
                    max_operators=config.adapt_max_operators, optimizer=config.optimizer,
                    optimizer_options=config.optimizer_options, max_iterations=config.max_iterations,
                    on_step=record_step,
                )  # fmt: skip
                ansatz = excitation_circuit(problem, grown.excitations)
                objective.ev = SectorEnergyEvaluator(
                    sector_ansatz_for(sector.space, grown.excitations), sector_h
                )
                objective.nfev = grown.nfev
                adapt_operators = [operator_label(e) for e in grown.excitations]
                x_final, success, message = grown.x, grown.success, grown.message
            elif ansatz.num_parameters == 0:  # nothing to optimise (e.g. no excitations in the space)
                x_final, message = x0, "no parameters: energy of the reference state"
            elif config.optimizer == "SPSA":
                outcome = run_spsa(
                    lambda x: objective(x), x0, callback=record_iteration, options=config.optimizer_options,
                    max_iterations=config.max_iterations, seed=config.seed,
                )  # fmt: skip
            else:
                outcome = run_scipy(
                    config.optimizer, objective, x0, with_gradient=with_gradient, callback=record_iteration,
                    options=config.optimizer_options, max_iterations=config.max_iterations,
                    max_evaluations=config.max_evaluations,
                    step_scale=initial_step if initial_point is not None else None,
                )  # fmt: skip
            if ansatz.num_parameters and config.ansatz != "adapt":
                x_final, success, message = outcome.x, outcome.success, outcome.message
        except BudgetExceeded as stop:
            x_final = np.array(iterations[-1]["parameters"]) if iterations else x0
            success, message = False, f"stopped: {stop}"
        finally:
            bar.close()

    objective.max_evaluations = None  # the final energy is always evaluated
    final_energy, final_std, _ = objective.evaluate(x_final, need_gradient=False)
    vqe_s = time.perf_counter() - t_vqe + sector_setup_s
    if exact is not None and config.shots is None and final_energy < exact - 1e-6:
        sector_ok = config.ansatz in CHEMISTRY_ANSATZES or config.ansatz == "excitation_preserving"
        log.log(logging.ERROR if sector_ok else logging.WARNING,
                "%s: VQE energy %.8f is below the sector exact energy %.8f (state left the particle sector)",
                molecule.name, final_energy, exact)  # fmt: skip

    if iterations and final_std is not None:
        iterations[-1]["std"] = iterations[-1]["std"] if iterations[-1]["std"] is not None else final_std
    return Simulation(
        problem=problem, ansatz=ansatz,
        circuit=ansatz if sector is not None or config.shots is not None else evaluator.transpiled_ansatz,
        device_used=device_used, kernel="sector" if sector is not None else "aer", x0=x0, x_final=x_final,
        iterations=iterations, final_energy=float(final_energy), exact=exact, exact_method=exact_method,
        success=success, message=message, nfev=objective.nfev, adapt_operators=adapt_operators,
        started_at=started_at, t_start=t_start, vqe_s=vqe_s, exact_s=exact_s,
    )  # fmt: skip


def build_result(
    sim: Simulation,
    molecule: Molecule,
    config: VQEConfig,
    *,
    request_id: str | None = None,
    performance_snapshots: list[dict[str, Any]] | None = None,
    reusable: bool = True,
) -> VQEResult:
    """The result record (schema ``vqe_result``) of a :class:`Simulation`: identifiers, the molecule and
    configuration as run, the circuit as OpenQASM 3, energies (hartree), timings (seconds), versions.
    ``experiment_key`` is set when the run may be reused (``reusable``: not warm-started from a given
    initial point; and :func:`reuse.is_reproducible`), else None."""
    problem, ansatz, iterations, exact = sim.problem, sim.ansatz, sim.iterations, sim.exact
    num_qubits, device_used, kernel, total_energy = (
        ansatz.num_qubits,
        sim.device_used,
        sim.kernel,
        sim.final_energy,
    )
    x0, x_final, started_at, t_start = sim.x0, sim.x_final, sim.started_at, sim.t_start
    qasm, depth = ansatz_qasm3(sim.circuit)
    snapshots = list(performance_snapshots or [])
    result = VQEResult(
        run_id=str(uuid.uuid4()),
        request_id=request_id,
        experiment_id=experiment_id(molecule_key(molecule), config),
        experiment_key=reuse.experiment_key(molecule_key(molecule), config)
        if reusable and reuse.is_reproducible(config)
        else None,
        event_time=now_ms(),
        started_at=started_at,
        molecule=molecule_record(molecule),
        basis=config.basis,
        mapper=config.mapper,
        active_space={
            "freeze_core": config.freeze_core,
            "active_electrons": config.active_electrons,
            "active_orbitals": config.active_orbitals,
            "num_spatial_orbitals": problem.num_spatial_orbitals,
            "num_alpha": problem.num_particles[0],
            "num_beta": problem.num_particles[1],
            "num_qubits": num_qubits,
        },
        ansatz={
            "name": config.ansatz,
            "reps": config.reps,
            "num_parameters": ansatz.num_parameters,
            "num_qubits": num_qubits,
            "depth": depth,
            "initial_state": config.initial_state,
            "circuit_qasm3": qasm,
        },
        optimizer={
            "name": config.optimizer,
            "options_json": json.dumps(_recorded_options(config), sort_keys=True),
            "max_iterations": config.max_iterations,
            "max_evaluations": config.max_evaluations,
        },
        backend={
            "method": config.backend_method,
            "shots": config.shots,
            "device_requested": config.device,
            "device_used": device_used,
            "seed": config.seed,
            "kernel": kernel,
            "noise_model": config.noise,
        },
        initial_parameters=[float(v) for v in x0],
        optimal_parameters=[float(v) for v in x_final],
        hamiltonian_terms=[
            {"pauli": label, "coeff_real": float(c.real), "coeff_imag": float(c.imag)}
            for label, c in zip(problem.qubit_op.paulis.to_labels(), problem.qubit_op.coeffs, strict=True)
        ],
        iterations=iterations,
        reference_energies={
            "hf": problem.hf_energy,
            "exact": exact,
            "exact_method": sim.exact_method,
            "nuclear_repulsion": problem.nuclear_repulsion,
        },
        electronic_energy=total_energy - problem.nuclear_repulsion,
        total_energy=total_energy,
        error_vs_exact_mha=None if exact is None else (total_energy - exact) * 1000.0,
        optimizer_result={
            "success": sim.success,
            "nfev": sim.nfev,
            "nit": len(iterations),
            "message": sim.message,
        },
        timings={
            "hamiltonian_s": problem.hamiltonian_s,
            "mapping_s": problem.mapping_s,
            "vqe_s": sim.vqe_s,
            "total_s": time.perf_counter() - t_start,
        },
        package_versions={  # kernel / noise also here: the feature tables read with the v3 contract
            **reuse.package_versions(),
            "kernel": kernel,
            **({"noise_model": config.noise} if config.noise is not None else {}),
        },
        adapt=None
        if config.ansatz != "adapt"
        else {
            "gradient_threshold": config.adapt_gradient_threshold,
            "max_operators": config.adapt_max_operators,
            "operators": sim.adapt_operators,
        },
        performance_snapshots=snapshots,
    )
    log.info("%s: E=%.8f Ha exact=%s in %.2fs (exact reference %.2fs)", molecule.name, total_energy,
             f"{exact:.8f}" if exact is not None else "n/a", result.timings["total_s"], sim.exact_s)  # fmt: skip
    return result
