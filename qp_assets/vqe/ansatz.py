"""Ansatz circuits and starting parameters.

Chemistry ansatzes (UCCSD, PUCCD, SUCCD; qiskit-nature) always start from the Hartree-Fock reference;
hardware-efficient ones (EfficientSU2, RealAmplitudes, ExcitationPreserving; Qiskit 2.x function forms)
get the HF reference prepended too, except for initial_state=zeros (start from |0...0>).
"""

from __future__ import annotations

import numpy as np
from qiskit import QuantumCircuit, qasm3, transpile

from qp_assets.vqe.config import CHEMISTRY_ANSATZES, VQEConfig
from qp_assets.vqe.hamiltonian import QubitProblem

QASM_BASIS = ["cx", "rz", "ry", "rx", "h", "x", "sx", "s", "sdg"]


def build_ansatz(problem: QubitProblem, config: VQEConfig) -> QuantumCircuit:
    """Parametrised ansatz including its initial-state preparation."""
    from qiskit.circuit.library import efficient_su2, excitation_preserving, real_amplitudes
    from qiskit_nature.second_q.circuit.library import PUCCD, SUCCD, UCCSD, HartreeFock

    n_orb, n_part, mapper = problem.num_spatial_orbitals, problem.num_particles, problem.mapper
    hf = HartreeFock(n_orb, n_part, mapper)
    if config.ansatz in CHEMISTRY_ANSATZES:
        cls = {"uccsd": UCCSD, "puccd": PUCCD, "succd": SUCCD}[config.ansatz]
        ansatz = cls(n_orb, n_part, mapper, reps=config.reps, initial_state=hf)
        if not ansatz.excitation_list:  # e.g. one electron in one orbital: the reference is exact
            circuit = QuantumCircuit(problem.num_qubits, name=config.ansatz)
            circuit.compose(hf, inplace=True)
            return circuit
        circuit = ansatz.decompose()  # HF X gates + one PauliEvolutionGate per excitation
        circuit.name = config.ansatz
        return circuit
    n = problem.num_qubits
    body = {
        "efficient_su2": lambda: efficient_su2(n, reps=config.reps),
        "real_amplitudes": lambda: real_amplitudes(n, reps=config.reps),
        "excitation_preserving": lambda: excitation_preserving(n, reps=config.reps),
    }[config.ansatz]()
    circuit = QuantumCircuit(n, name=config.ansatz)
    if config.initial_state != "zeros":
        circuit.compose(hf, inplace=True)
    circuit.compose(body, inplace=True)
    return circuit


def initial_parameters(config: VQEConfig, num_parameters: int) -> np.ndarray:
    """hartree_fock / zeros: all zero; random: seeded uniform in [-0.1, 0.1] (chemistry) or [-pi, pi]."""
    if config.initial_state != "random":
        return np.zeros(num_parameters)
    rng = np.random.default_rng(config.seed)
    width = 0.1 if config.ansatz in CHEMISTRY_ANSATZES else np.pi
    return rng.uniform(-width, width, num_parameters)


def ansatz_qasm3(circuit: QuantumCircuit) -> tuple[str, int]:
    """OpenQASM 3 text of the parametrised circuit in a plain gate basis, and that circuit's depth.

    A circuit already in plain gates (e.g. the one transpiled for Aer) is exported as is.
    """
    plain = set(QASM_BASIS) | {"u", "barrier"}
    if all(inst.operation.name in plain for inst in circuit.data):
        flat = circuit
    else:
        flat = transpile(circuit, basis_gates=QASM_BASIS, optimization_level=0)
    return qasm3.dumps(flat), int(flat.depth())
