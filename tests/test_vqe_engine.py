"""Unit tests of the simulation kernels: compiled statevector ops + adjoint gradients, fast JW, sector FCI."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit.circuit.library import efficient_su2, excitation_preserving
from qiskit.quantum_info import SparsePauliOp, Statevector
from qiskit_nature.second_q.circuit.library import SUCCD, UCCSD, HartreeFock
from qiskit_nature.second_q.mappers import BravyiKitaevMapper, JordanWignerMapper, ParityMapper
from qiskit_nature.second_q.operators import FermionicOp

from qp_assets.vqe.errors import InputError
from qp_assets.vqe.exact import sector_hamiltonian, sector_states
from qp_assets.vqe.fast_jw import jordan_wigner
from qp_assets.vqe.simulator import AerEnergyEvaluator, check_memory
from qp_assets.vqe.statevector_ops import CompiledCircuit


def _circuits():
    jw, parity, bk = JordanWignerMapper(), ParityMapper(num_particles=(1, 1)), BravyiKitaevMapper()
    return {
        "uccsd_jw": UCCSD(3, (1, 1), jw, initial_state=HartreeFock(3, (1, 1), jw)).decompose(),
        "uccsd_parity_reps2": UCCSD(
            3, (1, 1), parity, reps=2, initial_state=HartreeFock(3, (1, 1), parity)
        ).decompose(),
        "succd_bk": SUCCD(3, (1, 1), bk, initial_state=HartreeFock(3, (1, 1), bk)).decompose(),
        "efficient_su2": efficient_su2(4, reps=2),
        "excitation_preserving_fsim": excitation_preserving(4, reps=1, mode="fsim"),
    }


@pytest.mark.parametrize("name", list(_circuits()))
def test_compiled_state_and_adjoint_gradient_match_qiskit_and_finite_differences(name):
    circuit = _circuits()[name]
    rng = np.random.default_rng(7)
    compiled = CompiledCircuit(circuit)
    theta = rng.uniform(-1, 1, circuit.num_parameters)
    reference = Statevector(
        circuit.assign_parameters(dict(zip(compiled.parameters, theta, strict=True)))
    ).data
    assert abs(np.vdot(reference, compiled.statevector(theta))) == pytest.approx(1.0, abs=1e-10)
    n = circuit.num_qubits
    ham = SparsePauliOp.from_list([("".join(rng.choice(list("IXYZ"), n)), rng.normal()) for _ in range(25)])
    h = ham.to_matrix(sparse=True)

    def energy(t):
        psi = compiled.statevector(t)
        return float(np.vdot(psi, h @ psi).real)

    psi = compiled.statevector(theta)
    grad = compiled.adjoint_gradient(theta, psi, h @ psi)
    eps = 1e-6
    fd = np.array(
        [(energy(theta + eps * e) - energy(theta - eps * e)) / (2 * eps) for e in np.eye(len(theta))]
    )
    np.testing.assert_allclose(grad, fd, atol=1e-7)


def test_aer_evaluator_matches_numpy_engine():
    circuit = _circuits()["uccsd_jw"]
    ham = SparsePauliOp.from_list([("ZZIIXX", 0.3), ("IZIZII", -0.7), ("YYIIII", 0.2)])
    theta = np.array([0.1, -0.2, 0.3, 0.05, -0.4, 0.2, 0.15, 0.1][: circuit.num_parameters])
    ref = AerEnergyEvaluator(circuit, ham, use_aer=False)
    e_ref, g_ref = ref.energy_and_gradient(theta)
    for path in ("state", "run"):  # AerState replay and AerSimulator.run + save_statevector
        aer = AerEnergyEvaluator(circuit, ham, aer_path=path)
        assert aer.aer_path == path
        energy, grad = aer.energy_and_gradient(theta)
        assert energy == pytest.approx(e_ref, abs=1e-12)
        np.testing.assert_allclose(grad, g_ref, atol=1e-10)


def test_fast_jordan_wigner_equals_qiskit_nature():
    op = FermionicOp(
        {"+_0 -_3 +_2 -_1": 0.3 + 0.1j, "-_2 +_2": 1.0, "+_1 -_1": -0.4, "": 0.5, "+_3 +_0 -_0 -_3": 0.25},
        num_spin_orbitals=4,
    )
    diff = (JordanWignerMapper().map(op) - jordan_wigner(op)).simplify(atol=1e-12)
    assert np.allclose(diff.coeffs, 0)


def test_sector_hamiltonian_equals_restricted_dense_matrix():
    rng = np.random.default_rng(0)
    op = SparsePauliOp(["".join(rng.choice(list("IXYZ"), 6)) for _ in range(40)], rng.normal(size=40) + 0j)
    op = (op + op.adjoint()).simplify()
    states = sector_states(3, (1, 2))
    assert len(states) == 3 * 3
    dense = op.to_matrix()[np.ix_(states, states)]
    np.testing.assert_allclose(sector_hamiltonian(op, states).toarray(), dense, atol=1e-12)


def test_memory_guard_refuses_before_allocating():
    with pytest.raises(InputError, match="molecule big: field 'num_qubits' = 40"):
        check_memory("big", 40, 1 << 44)
    with pytest.raises(InputError, match="GiB"):
        check_memory("big", 20, 1 << 60)


def test_incore_mo_transform_equals_pyscf_out_of_core_and_is_scoped() -> None:
    from pyscf import ao2mo, gto, scf

    from qp_assets.vqe.hamiltonian import incore_ao2mo

    original = ao2mo.full, ao2mo.general
    for atom, spin in (("Li 0 0 0; H 0 0 1.595", 0), ("O 0 0 0; H 0 0 0.97", 1)):  # RHF and ROHF
        mol = gto.M(atom=atom, spin=spin, basis="sto3g", verbose=0)
        mf = (scf.ROHF if spin else scf.RHF)(mol).run()
        mo, flipped = mf.mo_coeff, mf.mo_coeff[:, ::-1]
        out_of_core = ao2mo.full(mol, mo, aosym=4), ao2mo.general(mol, [flipped, flipped, mo, mo], aosym=4)
        with incore_ao2mo(mol):
            assert (ao2mo.full, ao2mo.general) != original
            in_memory = ao2mo.full(mol, mo, aosym=4), ao2mo.general(mol, [flipped, flipped, mo, mo], aosym=4)
        for a, b in zip(out_of_core, in_memory, strict=True):
            assert a.shape == b.shape
            np.testing.assert_allclose(b, a, atol=1e-12)
    assert (ao2mo.full, ao2mo.general) == original
