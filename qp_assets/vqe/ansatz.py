"""Ansatz circuits and starting parameters.

Chemistry ansatzes (UCCSD, PUCCD, SUCCD; qiskit-nature) always start from the Hartree-Fock reference;
hardware-efficient ones (EfficientSU2, RealAmplitudes, ExcitationPreserving; Qiskit 2.x function forms)
get the HF reference prepended too, except for initial_state=zeros (start from |0...0>).
"""

from __future__ import annotations

import numpy as np
from qiskit import QuantumCircuit, qasm3

from qp_assets.vqe.config import CHEMISTRY_ANSATZES, VQEConfig
from qp_assets.vqe.hamiltonian import QubitProblem
from qp_assets.vqe.sector_kernel import SectorAnsatz, SectorSpace, build_tables

QASM_BASIS = ["cx", "rz", "ry", "rx", "h", "x", "sx", "s", "sdg"]


def build_ansatz(problem: QubitProblem, config: VQEConfig) -> QuantumCircuit:
    """Parametrised ansatz including its initial-state preparation."""
    from qiskit.circuit.library import efficient_su2, excitation_preserving, real_amplitudes
    from qiskit_nature.second_q.circuit.library import PUCCD, SUCCD, UCCSD, HartreeFock

    n_orb, n_part, mapper = problem.num_spatial_orbitals, problem.num_particles, problem.mapper
    hf = HartreeFock(n_orb, n_part, mapper)
    if config.ansatz == "adapt":  # grown by ADAPT-VQE; starts as the bare reference
        return excitation_circuit(problem, [])
    if config.ansatz in CHEMISTRY_ANSATZES:
        cls = {"uccsd": UCCSD, "puccd": PUCCD, "succd": SUCCD}[config.ansatz]
        ansatz = cls(n_orb, n_part, mapper, reps=config.reps, initial_state=hf)
        if not ansatz.excitation_list:  # e.g. one electron in one orbital: the reference is exact
            circuit = QuantumCircuit(problem.num_qubits, name=config.ansatz)
            circuit.compose(hf, inplace=True)
            return circuit
        circuit = ansatz.decompose()  # HF X gates + one PauliEvolutionGate per excitation
        circuit.name = config.ansatz
        circuit.metadata = {"excitation_groups": _excitation_groups(ansatz)}
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


def excitation_circuit(
    problem: QubitProblem, excitations: list[tuple[tuple[int, ...], tuple[int, ...]]]
) -> QuantumCircuit:
    """HF reference followed by one evolved excitation per entry (repeats allowed), one parameter each:
    the circuit of an ADAPT-VQE ansatz."""
    from qiskit_nature.second_q.circuit.library import UCC, HartreeFock

    n_orb, n_part, mapper = problem.num_spatial_orbitals, problem.num_particles, problem.mapper
    hf = HartreeFock(n_orb, n_part, mapper)
    if not excitations:
        circuit = QuantumCircuit(problem.num_qubits, name="adapt")
        circuit.compose(hf, inplace=True)
    else:
        ucc = UCC(n_orb, n_part, excitations=lambda **_kw: list(excitations), qubit_mapper=mapper,
                  initial_state=hf)  # fmt: skip
        circuit = ucc.decompose()
        circuit.name = "adapt"
    circuit.metadata = {"excitation_groups": [[exc] for exc in excitations]}
    return circuit


def _excitation_groups(ansatz) -> list[list[tuple[tuple[int, ...], tuple[int, ...]]]] | None:
    """The excitations behind each evolved operator of a qiskit-nature UCC ansatz (one per operator, or
    SUCCD's mirrored pairs sharing a parameter), or None when a shared operator is not an exact product
    of its excitations (its Pauli terms do not all commute, so the circuit is a Trotter product)."""
    groups_by_level = getattr(ansatz, "_excitations_dict", None)  # SUCCD: one entry per shared parameter
    if groups_by_level is None:
        return [[exc] for exc in ansatz.excitation_list]
    groups = [list(g) for g in groups_by_level.values()]
    if len(groups) != len(ansatz.operators):
        return None
    for group, op in zip(groups, ansatz.operators, strict=True):
        if len(group) > 1:
            x, z = op.paulis.x, op.paulis.z
            anti = (x.astype(np.uint8) @ z.T.astype(np.uint8) + z.astype(np.uint8) @ x.T.astype(np.uint8)) % 2
            if anti.any():
                return None
    return groups


def sector_ansatz(circuit: QuantumCircuit, problem: QubitProblem) -> SectorAnsatz | None:
    """The electron-sector form of a UCC-family circuit built by :func:`build_ansatz`, or None when the
    circuit is not a product of excitation rotations on the HF state (hardware-efficient ansatzes, SUCCD
    with non-commuting shared operators)."""
    from qiskit.circuit import ParameterExpression
    from qiskit.circuit.library import PauliEvolutionGate

    groups = (circuit.metadata or {}).get("excitation_groups")
    if groups is None:
        return None
    pindex = {p: i for i, p in enumerate(circuit.parameters)}
    excitations, params, scales = [], [], []
    gate = 0
    for inst in circuit.data:
        op = inst.operation
        if not isinstance(op, PauliEvolutionGate):
            continue
        t = op.params[0]
        if not isinstance(t, ParameterExpression) or len(t.parameters) != 1:
            return None
        (p,) = t.parameters
        if float(t.bind({p: 0.0})) != 0.0:
            return None
        for exc in groups[gate % len(groups)]:
            excitations.append(exc)
            params.append(pindex[p])
            scales.append(float(t.gradient(p)))
        gate += 1
    space = SectorSpace(problem.num_spatial_orbitals, *problem.num_particles)
    return SectorAnsatz(space, build_tables(space, excitations, params, scales), circuit.num_parameters)


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
        flat = _to_qasm_basis(circuit)
    return qasm3.dumps(flat), int(flat.depth())


def _to_qasm_basis(circuit: QuantumCircuit) -> QuantumCircuit:
    """``circuit`` in ``QASM_BASIS``: what ``transpile(..., optimization_level=0)`` gives without a coupling
    map (same text and depth, checked on UCCSD and EfficientSU2), run as its two passes only. ``transpile``
    first discovers every installed transpiler plugin (stevedore entry points), which imports packages such
    as qiskit-ibm-runtime: 1.3 s on the first call of a process, i.e. of every run."""
    from qiskit.circuit.equivalence_library import SessionEquivalenceLibrary
    from qiskit.transpiler import PassManager
    from qiskit.transpiler.passes import BasisTranslator, HighLevelSynthesis

    passes = PassManager(
        [HighLevelSynthesis(basis_gates=QASM_BASIS), BasisTranslator(SessionEquivalenceLibrary, QASM_BASIS)]
    )
    return passes.run(circuit)
