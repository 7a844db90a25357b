"""Electronic-structure problem -> qubit Hamiltonian (qiskit-nature 0.8 + PySCF).

Energies in hartree. ``energy_shift`` collects every constant the transformers move out of the
electronic operator (nuclear repulsion, frozen-core energy), so total energy = <H_qubit> + energy_shift.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from qiskit.quantum_info import SparsePauliOp

from qp_assets.vqe.config import VQEConfig
from qp_assets.vqe.errors import InputError
from qp_assets.vqe.fast_jw import fast_jordan_wigner_mapper, jordan_wigner
from qp_assets.vqe.molecule import Molecule, canonical_symbol

log = logging.getLogger(__name__)

MAX_STATEVECTOR_QUBITS = 28  # statevector simulation limit (2^28 amplitudes = 4 GiB per vector)


@dataclass
class QubitProblem:
    """A mapped problem: qubit operator of the active space plus everything needed to interpret it."""

    qubit_op: SparsePauliOp
    fermionic_op: Any  # FermionicOp
    mapper: Any
    num_spatial_orbitals: int
    num_particles: tuple[int, int]
    hf_energy: float
    nuclear_repulsion: float
    energy_shift: float
    hamiltonian_s: float
    mapping_s: float
    #: active-space (h1 (norb x norb), eri (norb^4, chemists' order)) in hartree when both spins share the
    #: integrals (RHF / ROHF), else None; what the electron-sector kernel needs.
    integrals: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def num_qubits(self) -> int:
        return self.qubit_op.num_qubits


def check_basis(molecule: Molecule, basis: str) -> None:
    """Raise InputError if PySCF does not know ``basis`` for every element of the molecule."""
    from pyscf import gto

    for sym in sorted({canonical_symbol(s) for s in molecule.symbols}):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loaded = gto.basis.load(basis, sym)
        except Exception as exc:  # noqa: BLE001 - PySCF raises several types
            reason = " ".join(str(exc).split())
            raise InputError(
                f"molecule {molecule.name}: field 'basis' = {basis!r} is unknown to PySCF for element {sym} ({reason})"
            ) from None
        if not loaded:
            raise InputError(
                f"molecule {molecule.name}: field 'basis' = {basis!r} has no functions for {sym}"
            )


#: Largest 8-fold-symmetric AO integral array kept in memory for the MO transformation (bytes).
INCORE_ERI_LIMIT_BYTES = 512 * 2**20
_AO2MO_LOCK = threading.Lock()


@contextmanager
def incore_ao2mo(mol):
    """Within the block, ``pyscf.ao2mo.full/general(mol, ...)`` transform in memory instead of via HDF5.

    PySCFDriver.to_qcschema calls them with the Mole, which selects PySCF's out-of-core path (a temporary
    HDF5 file per call: 16 ms for H2 against 0.4 ms in memory). The result is the same array;
    calls with any other first argument, or molecules whose AO integrals exceed INCORE_ERI_LIMIT_BYTES, go
    to PySCF unchanged.
    """
    from pyscf import ao2mo
    from pyscf.ao2mo import incore

    nao = int(mol.nao)
    npair = nao * (nao + 1) // 2
    if npair * (npair + 1) // 2 * 8 > INCORE_ERI_LIMIT_BYTES:
        yield
        return
    eri = mol.intor("int2e", aosym="s8")  # the driver always transforms: no need to defer this
    full, general = ao2mo.full, ao2mo.general

    def same_call(eri_or_mol, args, kwargs) -> bool:  # the driver's call: (mol, mo, aosym=4) -> compact pairs
        return eri_or_mol is mol and not args and kwargs == {"aosym": 4}

    def full_incore(eri_or_mol, mo_coeff, *args, **kwargs):
        if not same_call(eri_or_mol, args, kwargs):
            return full(eri_or_mol, mo_coeff, *args, **kwargs)
        return incore.full(eri, mo_coeff, compact=True)

    def general_incore(eri_or_mol, mo_coeffs, *args, **kwargs):
        if not same_call(eri_or_mol, args, kwargs):
            return general(eri_or_mol, mo_coeffs, *args, **kwargs)
        return incore.general(eri, mo_coeffs, compact=True)

    with _AO2MO_LOCK:
        ao2mo.full, ao2mo.general = full_incore, general_incore
        try:
            yield
        finally:
            ao2mo.full, ao2mo.general = full, general


def _driver_class():
    """PySCFDriver that writes no checkpoint file (PySCF dumps one per SCF cycle by default)."""
    from qiskit_nature.second_q.drivers import PySCFDriver

    class NoCheckpointPySCFDriver(PySCFDriver):
        def to_qcschema(self, *, include_dipole: bool = True):
            with incore_ao2mo(self._mol):
                return super().to_qcschema(include_dipole=include_dipole)

        def run_pyscf(self) -> None:  # documented extension point of PySCFDriver
            from pyscf import scf

            self._build_molecule()
            self._calc = getattr(scf, self.method.value.upper())(self._mol)
            self._calc.chkfile = None
            self._calc.conv_tol = self._conv_tol
            self._calc.max_cycle = self._max_cycle
            self._calc.init_guess = self._init_guess
            self._calc.kernel()
            if not self._calc.converged:
                log.warning("PySCF SCF did not converge (e_tot %.8f)", self._calc.e_tot)

    return NoCheckpointPySCFDriver


def spin_free_integrals(problem) -> tuple[np.ndarray, np.ndarray] | None:
    """(h1, eri) of an ElectronicStructureProblem in hartree, eri as a full norb^4 array in chemists' order
    (pq|rs), when the alpha, beta and beta-alpha integrals all agree and are real; else None."""
    from qiskit_nature.second_q.operators.symmetric_two_body import unfold
    from qiskit_nature.second_q.operators.tensor_ordering import to_chemist_ordering

    def dense(tensor) -> np.ndarray:
        return np.asarray(getattr(tensor, "array", tensor))

    def chemist(two_body) -> np.ndarray:
        return dense(unfold(to_chemist_ordering(two_body), validate=False))

    ints = problem.hamiltonian.electronic_integrals
    h1, eri = dense(ints.alpha["+-"]), chemist(ints.alpha["++--"])
    others = []
    if not ints.beta.is_empty():
        others += [(dense(ints.beta["+-"]), h1), (chemist(ints.beta["++--"]), eri)]
    if not ints.beta_alpha.is_empty():
        others.append((chemist(ints.beta_alpha["++--"]), eri))
    if any(a.shape != b.shape or not np.allclose(a, b, atol=1e-12) for a, b in others):
        return None
    if (
        np.iscomplexobj(h1)
        and np.abs(h1.imag).max() > 1e-12
        or np.iscomplexobj(eri)
        and np.abs(eri.imag).max() > 1e-12
    ):
        return None
    return np.ascontiguousarray(np.real(h1)), np.ascontiguousarray(np.real(eri))


def make_mapper(name: str, num_particles: tuple[int, int]):
    from qiskit_nature.second_q.mappers import BravyiKitaevMapper, ParityMapper

    if name == "jordan_wigner":
        return fast_jordan_wigner_mapper()
    if name == "parity":
        return ParityMapper(num_particles=num_particles)  # two-qubit reduction
    if name == "bravyi_kitaev":
        return BravyiKitaevMapper()
    raise InputError(f"config: field 'mapper' has unknown value {name!r}")


def build_problem(molecule: Molecule, config: VQEConfig) -> QubitProblem:
    """Run PySCF (RHF, or ROHF for open shells), apply frozen core / active space, map to qubits."""
    from pyscf import lib as pyscf_lib
    from qiskit_nature.second_q.drivers import MethodType
    from qiskit_nature.second_q.transformers import ActiveSpaceTransformer, FreezeCoreTransformer
    from qiskit_nature.units import DistanceUnit

    check_basis(molecule, config.basis)
    t0 = time.perf_counter()
    driver = _driver_class()(
        atom=molecule.pyscf_atom(),
        unit=DistanceUnit.ANGSTROM,
        charge=molecule.charge,
        spin=molecule.spin,
        basis=config.basis,
        method=MethodType.ROHF if molecule.multiplicity > 1 else MethodType.RHF,
    )
    threads = pyscf_lib.num_threads()
    pyscf_lib.num_threads(1)  # tiny SCF problems: threads only add contention on shared machines
    try:
        driver.run_pyscf()
        problem = driver.to_problem(include_dipole=False)
    except Exception as exc:  # noqa: BLE001
        raise InputError(
            f"molecule {molecule.name}: PySCF failed for basis {config.basis!r}, charge {molecule.charge}, "
            f"multiplicity {molecule.multiplicity}: {exc}"
        ) from None
    finally:
        pyscf_lib.num_threads(threads)
    hf_energy = float(problem.reference_energy)
    nuclear_repulsion = float(problem.nuclear_repulsion_energy)
    try:
        if config.freeze_core:
            problem = FreezeCoreTransformer(freeze_core=True).transform(problem)
        if config.active_electrons is not None:
            n_el = sum(problem.num_particles)
            n_orb = problem.num_spatial_orbitals
            if config.active_electrons > n_el:
                raise InputError(
                    f"molecule {molecule.name}: field 'active_electrons' = {config.active_electrons} exceeds the "
                    f"{n_el} electrons available"
                )
            if config.active_orbitals > n_orb:
                raise InputError(
                    f"molecule {molecule.name}: field 'active_orbitals' = {config.active_orbitals} exceeds the "
                    f"{n_orb} spatial orbitals available"
                )
            if config.active_electrons > 2 * config.active_orbitals:
                raise InputError(
                    f"molecule {molecule.name}: field 'active_electrons' = {config.active_electrons} does not fit "
                    f"in {config.active_orbitals} orbitals"
                )
            problem = ActiveSpaceTransformer(config.active_electrons, config.active_orbitals).transform(
                problem
            )
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - qiskit-nature raises QiskitNatureError
        raise InputError(
            f"molecule {molecule.name}: field 'active_space' ({config.active_electrons}, "
            f"{config.active_orbitals}) is invalid: {exc}"
        ) from None
    n_qubits = 2 * int(problem.num_spatial_orbitals) - (2 if config.mapper == "parity" else 0)
    if n_qubits > MAX_STATEVECTOR_QUBITS:  # refuse before building the (huge) qubit operator
        raise InputError(
            f"molecule {molecule.name}: field 'num_qubits' = {n_qubits} exceeds the simulator limit of "
            f"{MAX_STATEVECTOR_QUBITS} qubits (basis {config.basis!r}; use --freeze-core or --active-space)"
        )
    fermionic_op = problem.hamiltonian.second_q_op()
    energy_shift = float(sum(float(v) for v in problem.hamiltonian.constants.values()))
    num_particles = tuple(int(n) for n in problem.num_particles)
    t1 = time.perf_counter()
    mapper = make_mapper(config.mapper, num_particles)  # type: ignore[arg-type]
    if config.mapper == "jordan_wigner":  # identical operator, vectorised (see fast_jw)
        qubit_op = jordan_wigner(fermionic_op, 2 * int(problem.num_spatial_orbitals))
    else:
        qubit_op = mapper.map(fermionic_op).simplify(atol=1e-12)
    t2 = time.perf_counter()
    log.debug("problem %s: %d qubits, %d Pauli terms", molecule.name, qubit_op.num_qubits, len(qubit_op))
    return QubitProblem(
        qubit_op=qubit_op,
        fermionic_op=fermionic_op,
        mapper=mapper,
        num_spatial_orbitals=int(problem.num_spatial_orbitals),
        num_particles=num_particles,  # type: ignore[arg-type]
        hf_energy=hf_energy,
        nuclear_repulsion=nuclear_repulsion,
        energy_shift=energy_shift,
        hamiltonian_s=t1 - t0,
        mapping_s=t2 - t1,
        integrals=spin_free_integrals(problem),
    )
