"""VQE accuracy and speed benchmark (issues 3 and 17).

Runs the default configuration (Jordan-Wigner, UCCSD, Hartree-Fock start, L-BFGS-B, exact estimation; the
electron-sector kernel) on H2, HeH+, LiH, BeH2, H2O, NH3, N2 (and CO2 with --co2; STO-3G, frozen core for
the heavy-atom molecules) and prints qubits, parameters, iterations, evaluations, error vs the exact energy
of the same space (mHa), wall time and time per iteration.

Peer (issue 17): PennyLane 0.45 ``lightning.qubit`` with adjoint gradients on H2, LiH, H2O, NH3: same qubit
Hamiltonian (our Jordan-Wigner operator as a PennyLane Pauli sum), same HF state, one SingleExcitation /
DoubleExcitation gate per UCCSD excitation (same parameter count), same scipy L-BFGS-B from zero. Ours and
the peer alternate ``--repeats`` times per molecule; the table prints medians and their ratio. Without
PennyLane (the optional ``bench`` extra) the peer table is skipped with a note.

Naive baseline (issue 3): the same ansatz, optimizer and starting point the naive way (qiskit-aer
EstimatorV2 per energy evaluation, scipy finite-difference gradients) on H2 and LiH.

Usage: python benchmarks/vqe_accuracy_speed.py [--molecules H2,LiH] [--co2] [--repeats 3] [--no-peer]
       [--no-baseline]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

DEFAULT_MOLECULES = ["H2", "HeH+", "LiH", "BeH2", "H2O", "NH3", "N2"]
LIGHT = {"H2", "HeH+"}  # no core to freeze
BASELINE_MOLECULES = ["H2", "LiH"]
PEER_MOLECULES = ["H2", "LiH", "H2O", "NH3"]


def pennylane_available() -> bool:
    try:
        import pennylane  # noqa: F401
        import pennylane_lightning  # noqa: F401
    except ImportError:
        return False
    return True


def pennylane_peer(molecule, config) -> dict:
    """PennyLane-Lightning (adjoint) VQE on our Hamiltonian with one Givens excitation gate per UCCSD
    excitation; 'opt_s' times device + QNode creation and the optimisation (the Hamiltonian conversion,
    like our problem building, is not timed)."""
    import pennylane as qml
    from autograd import value_and_grad
    from pennylane import numpy as pnp
    from scipy.optimize import minimize

    from qp_assets.vqe.ansatz import build_ansatz
    from qp_assets.vqe.hamiltonian import build_problem
    from qp_assets.vqe.runner import exact_reference

    problem = build_problem(molecule, config)
    excitations = [group[0] for group in build_ansatz(problem, config).metadata["excitation_groups"]]
    exact, _ = exact_reference(problem, config)
    n, norb = problem.num_qubits, problem.num_spatial_orbitals
    hf = np.zeros(n, dtype=int)
    hf[: problem.num_particles[0]] = 1
    hf[norb : norb + problem.num_particles[1]] = 1
    terms = {
        qml.pauli.PauliWord({q: ch for q, ch in enumerate(reversed(label)) if ch != "I"}): float(c.real)
        for label, c in zip(problem.qubit_op.paulis.to_labels(), problem.qubit_op.coeffs, strict=True)
    }
    hamiltonian = qml.pauli.PauliSentence(terms).operation()

    t0 = time.perf_counter()
    dev = qml.device("lightning.qubit", wires=n)

    @qml.qnode(dev, diff_method="adjoint", interface="autograd")
    def energy(theta):
        qml.BasisState(hf, wires=range(n))
        for k, (occ, virt) in enumerate(excitations):
            gate = qml.SingleExcitation if len(occ) == 1 else qml.DoubleExcitation
            gate(theta[k], wires=[*occ, *virt])
        return qml.expval(hamiltonian)

    value_grad = value_and_grad(energy)
    nfev = 0

    def fun(x):
        nonlocal nfev
        nfev += 1
        value, grad = value_grad(pnp.array(x, requires_grad=True))
        return float(value) + problem.energy_shift, np.asarray(grad, dtype=float)

    res = minimize(fun, np.zeros(len(excitations)), jac=True, method="L-BFGS-B",
                   options={"maxiter": config.max_iterations})  # fmt: skip
    return {"opt_s": time.perf_counter() - t0, "error_mha": (float(res.fun) - exact) * 1000,
            "nit": int(res.nit), "nfev": nfev}  # fmt: skip


def peer_table(mols, names: list[str], repeats: int) -> None:
    """Ours vs PennyLane-Lightning, alternating runs, medians of the optimisation times."""
    from qp_assets.vqe.config import VQEConfig
    from qp_assets.vqe.runner import run_vqe

    print()
    if not pennylane_available():
        print("peer: PennyLane-Lightning not installed (pip install -e '.[bench]'); peer columns skipped")
        return
    print(f"peer: PennyLane 0.45 lightning.qubit, adjoint gradients; medians of {repeats} alternating runs")
    header = (f"{'molecule':8s} {'params':>6s} {'ours s':>8s} {'PL s':>8s} {'ratio':>7s} {'ours it':>7s} "
              f"{'PL it':>5s} {'ours mHa':>9s} {'PL mHa':>8s}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for name in names:
        cfg = VQEConfig(freeze_core=name not in LIGHT)
        ours, peer = [], []
        for rep in range(repeats):
            order = ("ours", "peer") if rep % 2 == 0 else ("peer", "ours")
            for side in order:
                if side == "ours":
                    ours.append(run_vqe(mols[name], cfg, progress=False))
                else:
                    peer.append(pennylane_peer(mols[name], cfg))
        ours_s = float(np.median([r.timings["vqe_s"] for r in ours]))
        peer_s = float(np.median([p["opt_s"] for p in peer]))
        print(
            f"{name:8s} {ours[0].ansatz['num_parameters']:6d} {ours_s:8.4f} {peer_s:8.3f} {peer_s / ours_s:6.1f}x "
            f"{ours[0].optimizer_result['nit']:7d} {peer[0]['nit']:5d} {ours[0].error_vs_exact_mha:9.4f} "
            f"{peer[0]['error_mha']:8.4f}",
            flush=True,
        )


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
    exact, _ = exact_reference(problem, config)
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
    parser.add_argument("--co2", action="store_true", help="add the CO2 frozen-core row (minutes)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per peer row")
    parser.add_argument("--peer-molecules", default=",".join(PEER_MOLECULES))
    parser.add_argument("--no-peer", action="store_true")
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

    names = [n.strip() for n in args.molecules.split(",") if n.strip()] + (["CO2"] if args.co2 else [])
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
        err = r.error_vs_exact_mha if r.error_vs_exact_mha is not None else float("nan")
        print(
            f"{name:8s} {r.num_qubits:6d} {r.ansatz['num_parameters']:6d} {nit:5d} {r.optimizer_result['nfev']:5d} "
            f"{err:10.4f} {'yes' if abs(err) <= 1.6 else 'NO':>8s} {r.timings['total_s']:8.2f} "
            f"{r.timings['vqe_s']:7.2f} {1000 * r.timings['vqe_s'] / max(nit, 1):8.1f}",
            flush=True,
        )
    print(f"whole table: {time.perf_counter() - t_table:.1f} s wall")

    if not args.no_peer:
        peer_table(mols, [n.strip() for n in args.peer_molecules.split(",") if n.strip()], args.repeats)
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
