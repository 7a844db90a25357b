"""ADAPT-VQE on the electron-sector kernel (Grimsley et al., Nat. Commun. 10, 3007 (2019)).

Starting from the Hartree-Fock determinant, each step computes the energy gradient ``2 <H psi|A_k|psi>``
(hartree/rad) of appending ``exp(theta A_k)`` for every operator of the pool (all spin-conserving single and
double excitations of the active space, the UCCSD set), appends the operator with the largest magnitude
(operators may be chosen again) and re-optimises all parameters from the previous optimum plus a zero.
It stops when the largest pool gradient is below ``gradient_threshold`` (success) or after
``max_operators`` operators (not a success: the message names the budget).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from qp_assets.vqe.optimizers import run_scipy
from qp_assets.vqe.sector_kernel import (
    SectorAnsatz,
    SectorEnergyEvaluator,
    SectorHamiltonian,
    SectorSpace,
    append_gradients,
    build_tables,
)

Excitation = tuple[tuple[int, ...], tuple[int, ...]]

#: L-BFGS-B options for the re-optimisations unless given: stop on the gradient (scipy's default gtol,
#: 1e-5 Ha/rad), not on a small relative energy change (scipy's default ftol, 2.2e-9 x |E|, ends steps in
#: the flat regions ADAPT passes through; N2 fc then stalls at 2.14 mHa with all pool gradients below
#: 1e-4 Ha/rad); a 60-pair memory for the 100+ parameters of the late steps. gtol 1e-7 cost twice the
#: evaluations on N2 fc (18,663 vs 9,418) for the same operators and 0.63 vs 0.62 mHa.
LBFGSB_DEFAULTS = {"ftol": 1e-13, "gtol": 1e-5, "maxcor": 60}


def inner_options(optimizer: str, options: dict) -> dict:
    """The options each re-optimisation uses: LBFGSB_DEFAULTS under the user's for L-BFGS-B."""
    return {**LBFGSB_DEFAULTS, **options} if optimizer == "L-BFGS-B" else dict(options)


def singles_doubles_pool(space: SectorSpace) -> list[Excitation]:
    """All spin-conserving single and double excitations from the HF occupation (qiskit-nature's UCCSD
    excitations, same spin-orbital indices: alpha 0..n-1, beta n..2n-1)."""
    from qiskit_nature.second_q.circuit.library.ansatzes.utils import generate_fermionic_excitations

    particles = (space.nalpha, space.nbeta)
    return [exc for order in (1, 2) for exc in generate_fermionic_excitations(order, space.norb, particles)]


def operator_label(excitation: Excitation) -> str:
    """Readable excitation: occupied -> virtual spin orbitals (alpha 0..n-1, beta n..2n-1), e.g. '3,11->5,13'."""
    occ, virt = excitation
    return f"{','.join(map(str, occ))}->{','.join(map(str, virt))}"


@dataclass
class AdaptOutcome:
    """Chosen operators in order, optimal parameters (rad), stop reason and energy evaluations used."""

    excitations: list[Excitation]
    x: np.ndarray
    success: bool
    message: str
    nfev: int


def sector_ansatz_for(space: SectorSpace, excitations: list[Excitation]) -> SectorAnsatz:
    """The product of ``excitations`` (one parameter each, in order) on the HF determinant."""
    params = list(range(len(excitations)))
    return SectorAnsatz(space, build_tables(space, excitations, params), len(excitations))


def run_adapt(
    hamiltonian: SectorHamiltonian,
    *,
    energy_shift: float,
    gradient_threshold: float,
    max_operators: int,
    optimizer: str,
    optimizer_options: dict,
    max_iterations: int | None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> AdaptOutcome:
    """Grow and optimise the ansatz; ``on_step`` receives, after each re-optimisation, a dict with
    step (1-based), operator (label), excitation, pool_gradient (|dE/dtheta| that selected it, Ha/rad),
    energy (total, hartree), parameters and nfev (energy evaluations so far)."""
    from qp_assets.vqe.config import GRADIENT_OPTIMIZERS

    space = hamiltonian.space
    pool = singles_doubles_pool(space)
    pool_tables = build_tables(space, pool, list(range(len(pool))))
    with_gradient = optimizer in GRADIENT_OPTIMIZERS
    options = inner_options(optimizer, optimizer_options)
    chosen: list[Excitation] = []
    theta = np.zeros(0)
    nfev = 0
    ansatz = sector_ansatz_for(space, chosen)
    while True:
        psi = ansatz.state(theta)
        h_psi = hamiltonian.apply(psi)
        nfev += 1
        grads = append_gradients(pool_tables, psi, h_psi)
        best = int(np.argmax(np.abs(grads))) if len(pool) else -1
        largest = float(abs(grads[best])) if len(pool) else 0.0
        if largest < gradient_threshold:
            return AdaptOutcome(chosen, theta, True, f"converged: largest pool gradient {largest:.2e} Ha/rad < "
                                f"gradient_threshold {gradient_threshold:g}", nfev)  # fmt: skip
        if len(chosen) >= max_operators:
            return AdaptOutcome(chosen, theta, False, f"stopped: max_operators ({max_operators}) reached with "
                                f"largest pool gradient {largest:.2e} Ha/rad", nfev)  # fmt: skip
        chosen.append(pool[best])
        ansatz = sector_ansatz_for(space, chosen)
        evaluator = SectorEnergyEvaluator(ansatz, hamiltonian)

        def objective(x, ev=evaluator):
            if with_gradient:
                e, g = ev.energy_and_gradient(x)
                return e + energy_shift, g
            return ev.energy_exact(x) + energy_shift

        outcome = run_scipy(optimizer, objective, np.append(theta, 0.0), with_gradient=with_gradient,
                            callback=lambda _x: None, options=options, max_iterations=max_iterations,
                            max_evaluations=None)  # fmt: skip
        theta = outcome.x
        nfev += evaluator.num_evaluations
        step = {
            "step": len(chosen),
            "operator": operator_label(pool[best]),
            "excitation": pool[best],
            "pool_gradient": largest,
            "energy": evaluator.energy_exact(theta) + energy_shift,
            "parameters": theta.copy(),
            "nfev": nfev + 1,
        }
        nfev += 1
        if on_step is not None:
            on_step(step)
