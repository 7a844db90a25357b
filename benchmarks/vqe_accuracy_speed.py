"""VQE accuracy and speed benchmark (issue 3).

Runs the default configuration (Jordan-Wigner, UCCSD, Hartree-Fock start, L-BFGS-B, Aer statevector) on
H2, HeH+, LiH, BeH2, H2O, NH3 (STO-3G; frozen core for the heavy-atom molecules) and prints qubits,
parameters, iterations, evaluations, error vs the exact energy of the same space (mHa), wall time and time
per iteration. In the same run it drives the same ansatz, optimizer and starting point the naive way
(qiskit-aer EstimatorV2 per energy evaluation, scipy finite-difference gradients) on H2 and LiH and prints
the speed ratios.

Usage: python benchmarks/vqe_accuracy_speed.py [--molecules H2,LiH] [--no-baseline]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

DEFAULT_MOLECULES = ["H2", "HeH+", "LiH", "BeH2", "H2O", "NH3"]
LIGHT = {"H2", "HeH+"}  # no core to freeze
BASELINE_MOLECULES = ["H2", "LiH"]


def naive_baseline(molecule, config) -> dict:
    """Same problem, ansatz, optimizer and x0; EstimatorV2 per evaluation + finite-difference gradients."""
    from qiskit import transpile
    from qiskit_aer.primitives import EstimatorV2
    from scipy.optimize import minimize

    from qp_assets.vqe.ansatz import build_ansatz, initial_parameters
    from qp_assets.vqe.hamiltonian import build_problem
    from qp_assets.vqe.runner import exact_reference
    from qp_assets.vqe.simulator import AER_BASIS

    t0 = time.perf_counter()
    problem = build_problem(molecule, config)
    ansatz = build_ansatz(problem, config)
    exact = exact_reference(problem, config)
    t1 = time.perf_counter()  # like ours, the timed VQE part includes the one-time circuit preparation
    # Aer cannot run PauliEvolutionGate directly: decompose once (not per evaluation).
    circuit = transpile(ansatz, basis_gates=AER_BASIS, optimization_level=1)
    estimator = EstimatorV2()
    nfev = 0

    def energy(x):
        nonlocal nfev
        nfev += 1
        return (
            float(estimator.run([(circuit, problem.qubit_op, x)]).result()[0].data.evs) + problem.energy_shift
        )

    x0 = initial_parameters(config, ansatz.num_parameters)
    res = minimize(energy, x0, method="L-BFGS-B", options={"maxiter": config.max_iterations})
    t2 = time.perf_counter()
    return {
        "energy": float(res.fun),
        "error_mha": (float(res.fun) - exact) * 1000,
        "nit": int(res.nit),
        "nfev": nfev,
        "opt_s": t2 - t1,
        "total_s": t2 - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", default=",".join(DEFAULT_MOLECULES))
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()

    t_import = time.perf_counter()
    from qp_assets.vqe.config import VQEConfig
    from qp_assets.vqe.molecule import load_molecules
    from qp_assets.vqe.runner import run_vqe

    mols = load_molecules()
    import_s = time.perf_counter() - t_import
    t_cold = time.perf_counter()
    run_vqe(mols["H2"], VQEConfig(), progress=False)  # warm-up: first-use imports inside the libraries
    cold_s = time.perf_counter() - t_cold
    print(f"imports {import_s:.1f} s; first (cold) H2 run {cold_s:.2f} s; figures below are warm runs")

    names = [n.strip() for n in args.molecules.split(",") if n.strip()]
    header = (f"{'molecule':8s} {'qubits':>6s} {'params':>6s} {'iters':>5s} {'evals':>5s} {'error mHa':>10s} "
              f"{'chem.acc':>8s} {'wall s':>8s} {'vqe s':>7s} {'ms/iter':>8s}")  # fmt: skip
    print(header)
    print("-" * len(header))
    ours: dict[str, object] = {}
    t_table = time.perf_counter()
    for name in names:
        cfg = VQEConfig(freeze_core=name not in LIGHT)
        r = run_vqe(mols[name], cfg, progress=False)
        ours[name] = r
        nit = r.optimizer_result["nit"]
        err = r.error_vs_exact_mha
        print(
            f"{name:8s} {r.num_qubits:6d} {r.ansatz['num_parameters']:6d} {nit:5d} {r.optimizer_result['nfev']:5d} "
            f"{err:10.4f} {'yes' if abs(err) <= 1.6 else 'NO':>8s} {r.timings['total_s']:8.2f} "
            f"{r.timings['vqe_s']:7.2f} {1000 * r.timings['vqe_s'] / max(nit, 1):8.1f}",
            flush=True,
        )
    print(f"whole table: {time.perf_counter() - t_table:.1f} s wall")

    if args.no_baseline:
        return
    print()
    print(
        "naive baseline: Aer EstimatorV2 per evaluation + finite-difference gradients (same ansatz/optimizer/x0)"
    )
    header = (f"{'molecule':8s} {'iters':>5s} {'evals':>6s} {'error mHa':>10s} {'opt s':>8s} {'total s':>8s} "
              f"{'ours opt s':>10s} {'ours total s':>12s} {'opt ratio':>9s} {'total ratio':>11s}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for name in BASELINE_MOLECULES:
        if name not in ours:
            ours[name] = run_vqe(mols[name], VQEConfig(freeze_core=name not in LIGHT), progress=False)
        r = ours[name]
        b = naive_baseline(mols[name], VQEConfig(freeze_core=name not in LIGHT))
        print(
            f"{name:8s} {b['nit']:5d} {b['nfev']:6d} {b['error_mha']:10.4f} {b['opt_s']:8.2f} {b['total_s']:8.2f} "
            f"{r.timings['vqe_s']:10.2f} {r.timings['total_s']:12.2f} "
            f"{b['opt_s'] / r.timings['vqe_s']:8.1f}x {b['total_s'] / r.timings['total_s']:10.1f}x",
            flush=True,
        )
    np.set_printoptions()


if __name__ == "__main__":
    main()
