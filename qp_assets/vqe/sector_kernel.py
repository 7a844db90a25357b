"""Electron-sector kernel for particle-conserving (UCC-family) ansatzes: state, energy, adjoint gradient.

A UCC excitation ``exp(theta (T - T^dagger))`` conserves N_alpha and N_beta, so the state never leaves the
(N_alpha, N_beta) sector: C(n, N_alpha) x C(n, N_beta) amplitudes instead of 2^(2n) (LiH frozen core: 25
instead of 1,024; CO2 frozen core: 245,025 instead of 16.8 M). With real parameters every amplitude stays
real. The state is a real matrix ``psi[alpha string, beta string]`` in PySCF's string order (``cistring``),
the basis in which PySCF's FCI code applies the Hamiltonian.

Conventions (identical to qiskit-nature's Jordan-Wigner mapping, qubits 0..n-1 alpha, n..2n-1 beta): a
determinant is ``a+_{p1} a+_{p2} ... |vac>`` with ascending spin-orbital indices, and an excitation
``((o1, o2), (v1, v2))`` of ``UCC.excitation_list`` is the operator ``T = a+_o1 a+_o2 a_v1 a_v2``
(qiskit-nature's label order) evolved as ``exp(theta (T - T^dagger))``, i.e. the circuit's
``PauliEvolutionGate(i (T - T^dagger), theta)``. Every pair of determinants (D, D') with ``T|D> = s|D'>``
rotates by the angle theta; nothing else changes. Energies are hartree (electronic part, without the
constant shift), parameters radians.

The rotations and their adjoint sweep are compiled with numba (one call per state / gradient, no Python per
excitation); ``H psi`` is PySCF's FCI ``direct_spin1.contract_2e`` (C, OpenMP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

#: Sector dimension below which ``H psi`` runs on one OpenMP thread.
SINGLE_THREAD_DIM = 20_000

KIND_ALPHA, KIND_BETA, KIND_MIXED = 0, 1, 2


@dataclass(frozen=True)
class SectorSpace:
    """The (N_alpha, N_beta) sector over ``norb`` spatial orbitals, strings in PySCF order."""

    norb: int
    nalpha: int
    nbeta: int

    @property
    def alpha_strings(self) -> np.ndarray:
        from pyscf.fci import cistring

        return np.asarray(cistring.make_strings(range(self.norb), self.nalpha), dtype=np.int64)

    @property
    def beta_strings(self) -> np.ndarray:
        from pyscf.fci import cistring

        return np.asarray(cistring.make_strings(range(self.norb), self.nbeta), dtype=np.int64)

    @property
    def shape(self) -> tuple[int, int]:
        return math.comb(self.norb, self.nalpha), math.comb(self.norb, self.nbeta)

    @property
    def dim(self) -> int:
        na, nb = self.shape
        return na * nb

    def hartree_fock(self) -> np.ndarray:
        """The HF determinant (lowest orbitals occupied): address 0 of both string lists."""
        psi = np.zeros(self.shape)
        psi[0, 0] = 1.0
        return psi

    def to_qubit_statevector(self, psi: np.ndarray) -> np.ndarray:
        """Embed a sector state into the 2^(2 norb) Jordan-Wigner statevector (qubit 0 = bit 0)."""
        full = np.zeros(1 << (2 * self.norb))
        idx = self.alpha_strings[:, None] | (self.beta_strings[None, :] << self.norb)
        full[idx.ravel()] = psi.ravel()
        return full


def _apply_ladder(
    strings: np.ndarray, ops: list[tuple[int, bool]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply a product of ladder operators (leftmost acts last) to bit strings of one spin.

    ``ops``: (orbital, is_creation). Returns (indices of the strings it does not annihilate, resulting
    strings, signs), the sign being the Jordan-Wigner parity of the occupied orbitals below each operator.
    """
    x = strings.copy()
    sign = np.ones(len(strings))
    ok = np.ones(len(strings), dtype=bool)
    for orb, create in reversed(ops):
        bit = np.int64(1) << orb
        occupied = (x & bit) != 0
        ok &= ~occupied if create else occupied
        sign *= 1.0 - 2.0 * (np.bitwise_count(x & (bit - 1)) & 1)
        x = x ^ bit
    idx = np.nonzero(ok)[0]
    return idx, x[idx], sign[idx]


@dataclass
class ExcitationTables:
    """Flat per-excitation pair lists for the numba kernels (see :func:`build_tables`)."""

    kind: np.ndarray  # int64 (K,): KIND_ALPHA | KIND_BETA | KIND_MIXED
    const: np.ndarray  # float (K,): sign from moving beta operators past alpha ones
    param: np.ndarray  # int64 (K,): parameter index driving the excitation
    scale: np.ndarray  # float (K,): angle = scale * theta[param]
    a_ptr: np.ndarray  # int64 (K+1,): alpha pairs of excitation k at a_ptr[k]:a_ptr[k+1]
    a_src: np.ndarray
    a_dst: np.ndarray
    a_sgn: np.ndarray
    b_ptr: np.ndarray
    b_src: np.ndarray
    b_dst: np.ndarray
    b_sgn: np.ndarray

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, f).nbytes for f in self.__dataclass_fields__)


def build_tables(
    space: SectorSpace,
    excitations: list[tuple[tuple[int, ...], tuple[int, ...]]],
    params: list[int],
    scales: list[float] | None = None,
) -> ExcitationTables:
    """Pair lists for ``excitations`` (qiskit-nature spin-orbital indices) applied in order.

    ``params[k]`` is the parameter index of excitation k (shared indices allowed), ``scales[k]`` its angle
    factor (default 1). Raises ValueError for an excitation that does not conserve N_alpha and N_beta.
    """
    from pyscf.fci import cistring

    n = space.norb
    alpha, beta = space.alpha_strings, space.beta_strings
    kinds, consts = [], []
    a_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    b_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    cache: dict[tuple[int, tuple[tuple[int, bool], ...]], tuple[np.ndarray, np.ndarray, np.ndarray]] = {
        (0, ()): empty,
        (1, ()): empty,
    }
    for occ, unocc in excitations:
        ops = [(p, True) for p in occ] + [(p, False) for p in unocc]  # T = a+_o... a_v...
        a_ops = [(p, c) for p, c in ops if p < n]
        b_ops = [(p - n, c) for p, c in ops if p >= n]
        if sum(1 if c else -1 for _, c in a_ops) or sum(1 if c else -1 for _, c in b_ops):
            raise ValueError(f"excitation {(occ, unocc)} does not conserve N_alpha and N_beta")
        # Jordan-Wigner: a beta operator also sees the parity of every occupied alpha orbital
        count, const = space.nalpha, 1.0
        for p, create in reversed(ops):
            if p >= n:
                const *= -1.0 if count % 2 else 1.0
            else:
                count += 1 if create else -1
        parts = []
        for spin, spin_ops, strings, nelec in (
            (0, a_ops, alpha, space.nalpha),
            (1, b_ops, beta, space.nbeta),
        ):
            key = (spin, tuple(spin_ops))
            if key not in cache:  # mixed doubles reuse the same single-spin parts many times
                src, new, sgn = _apply_ladder(strings, spin_ops)
                dst = np.asarray(cistring.strs2addr(n, nelec, new), dtype=np.int64)
                cache[key] = (src.astype(np.int64), dst, sgn)
            parts.append(cache[key])
        kinds.append(KIND_MIXED if a_ops and b_ops else (KIND_ALPHA if a_ops else KIND_BETA))
        consts.append(const)
        a_parts.append(parts[0])
        b_parts.append(parts[1])

    def flat(parts):
        ptr = np.zeros(len(parts) + 1, dtype=np.int64)
        ptr[1:] = np.cumsum([len(p[0]) for p in parts])
        cat = [np.concatenate([p[i] for p in parts]) if parts else empty[i] for i in range(3)]
        return ptr, cat[0].astype(np.int64), cat[1].astype(np.int64), cat[2].astype(float)

    a_ptr, a_src, a_dst, a_sgn = flat(a_parts)
    b_ptr, b_src, b_dst, b_sgn = flat(b_parts)
    return ExcitationTables(
        kind=np.asarray(kinds, dtype=np.int64),
        const=np.asarray(consts, dtype=float),
        param=np.asarray(params, dtype=np.int64),
        scale=np.ones(len(excitations)) if scales is None else np.asarray(scales, dtype=float),
        a_ptr=a_ptr, a_src=a_src, a_dst=a_dst, a_sgn=a_sgn,
        b_ptr=b_ptr, b_src=b_src, b_dst=b_dst, b_sgn=b_sgn,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- kernels
@numba.njit(cache=True, nogil=True)
def _rotate(psi, k, angle, kind, const, a_ptr, a_src, a_dst, a_sgn, b_ptr, b_src, b_dst, b_sgn):
    """psi <- exp(angle (T_k - T_k^dagger)) psi, in place."""
    c = math.cos(angle)
    s = math.sin(angle)
    nb = psi.shape[1]
    if kind[k] == KIND_ALPHA:
        for q in range(a_ptr[k], a_ptr[k + 1]):
            i, j, ss = a_src[q], a_dst[q], s * const[k] * a_sgn[q]
            for col in range(nb):
                x = psi[i, col]
                y = psi[j, col]
                psi[j, col] = c * y + ss * x
                psi[i, col] = c * x - ss * y
    elif kind[k] == KIND_BETA:
        for row in range(psi.shape[0]):
            for q in range(b_ptr[k], b_ptr[k + 1]):
                i, j, ss = b_src[q], b_dst[q], s * const[k] * b_sgn[q]
                x = psi[row, i]
                y = psi[row, j]
                psi[row, j] = c * y + ss * x
                psi[row, i] = c * x - ss * y
    else:
        for qa in range(a_ptr[k], a_ptr[k + 1]):
            ia, ja, sa = a_src[qa], a_dst[qa], s * const[k] * a_sgn[qa]
            for qb in range(b_ptr[k], b_ptr[k + 1]):
                ib, jb, ss = b_src[qb], b_dst[qb], sa * b_sgn[qb]
                x = psi[ia, ib]
                y = psi[ja, jb]
                psi[ja, jb] = c * y + ss * x
                psi[ia, ib] = c * x - ss * y


@numba.njit(cache=True, nogil=True)
def _overlap_generator(lam, phi, k, kind, const, a_ptr, a_src, a_dst, a_sgn, b_ptr, b_src, b_dst, b_sgn):
    """<lam| (T_k - T_k^dagger) |phi> for real vectors."""
    acc = 0.0
    nb = phi.shape[1]
    if kind[k] == KIND_ALPHA:
        for q in range(a_ptr[k], a_ptr[k + 1]):
            i, j = a_src[q], a_dst[q]
            part = 0.0
            for col in range(nb):
                part += lam[j, col] * phi[i, col] - lam[i, col] * phi[j, col]
            acc += a_sgn[q] * part
    elif kind[k] == KIND_BETA:
        for row in range(phi.shape[0]):
            for q in range(b_ptr[k], b_ptr[k + 1]):
                i, j = b_src[q], b_dst[q]
                acc += b_sgn[q] * (lam[row, j] * phi[row, i] - lam[row, i] * phi[row, j])
    else:
        for qa in range(a_ptr[k], a_ptr[k + 1]):
            ia, ja = a_src[qa], a_dst[qa]
            part = 0.0
            for qb in range(b_ptr[k], b_ptr[k + 1]):
                ib, jb = b_src[qb], b_dst[qb]
                part += b_sgn[qb] * (lam[ja, jb] * phi[ia, ib] - lam[ia, ib] * phi[ja, jb])
            acc += a_sgn[qa] * part
    return const[k] * acc


@numba.njit(cache=True, nogil=True)
def _forward(psi, angles, kind, const, a_ptr, a_src, a_dst, a_sgn, b_ptr, b_src, b_dst, b_sgn):
    for k in range(len(kind)):
        if angles[k] != 0.0:
            _rotate(psi, k, angles[k], kind, const, a_ptr, a_src, a_dst, a_sgn, b_ptr, b_src, b_dst, b_sgn)


@numba.njit(cache=True, nogil=True)
def _backward(phi, lam, angles, kind, const, a_ptr, a_src, a_dst, a_sgn, b_ptr, b_src, b_dst, b_sgn):
    """dE/d(angle_k) = 2 <lam_k|A_k|phi_k>, un-rotating phi (state) and lam (H state) gate by gate."""
    out = np.zeros(len(kind))
    for k in range(len(kind) - 1, -1, -1):
        out[k] = 2.0 * _overlap_generator(lam, phi, k, kind, const, a_ptr, a_src, a_dst, a_sgn, b_ptr, b_src,
                                          b_dst, b_sgn)  # fmt: skip
        if angles[k] != 0.0:
            _rotate(phi, k, -angles[k], kind, const, a_ptr, a_src, a_dst, a_sgn, b_ptr, b_src, b_dst, b_sgn)
            _rotate(lam, k, -angles[k], kind, const, a_ptr, a_src, a_dst, a_sgn, b_ptr, b_src, b_dst, b_sgn)
    return out


# ---------------------------------------------------------------------------------------------- Hamiltonian
class SectorHamiltonian:
    """Electronic Hamiltonian (hartree, no constant) acting on sector states ``psi[alpha, beta]``.

    ``h1`` (norb x norb) and ``eri`` (chemists' order (pq|rs), norb^4) are the active-space integrals,
    identical for both spins (RHF / ROHF orbitals). ``H psi`` is PySCF's ``direct_spin1.contract_2e``;
    below :data:`SINGLE_THREAD_DIM` determinants it runs on one OpenMP thread (for small sectors the
    threads' barriers cost 10-100x the work on a busy machine: LiH fc 0.03 ms vs 4-24 ms).
    """

    def __init__(self, space: SectorSpace, h1: np.ndarray, eri: np.ndarray):
        from pyscf.fci import direct_spin1

        self.space = space
        self.h1 = np.ascontiguousarray(h1, dtype=float)
        self.eri = np.ascontiguousarray(eri, dtype=float)
        self._nelec = (space.nalpha, space.nbeta)
        self._h2 = direct_spin1.absorb_h1e(self.h1, self.eri, space.norb, self._nelec, 0.5)
        self._threads = 1 if space.dim < SINGLE_THREAD_DIM else None
        # PySCF rebuilds the string link tables on every call without them (~20% of a call on N2 fc)
        self._link_index = direct_spin1._unpack(space.norb, self._nelec, None)

    def apply(self, psi: np.ndarray) -> np.ndarray:
        """H psi (same shape as psi)."""
        from pyscf import lib
        from pyscf.fci import direct_spin1

        with lib.with_omp_threads(self._threads):
            out = direct_spin1.contract_2e(self._h2, psi, self.space.norb, self._nelec, self._link_index)
        return out.reshape(psi.shape)

    def ground_energy(self) -> tuple[float, str]:
        """Lowest eigenvalue in the sector (hartree, electronic) and the method name (PySCF's FCI solver)."""
        from pyscf import lib
        from pyscf.fci import direct_spin1

        solver = direct_spin1.FCI()
        solver.conv_tol = 1e-12
        with lib.with_omp_threads(self._threads):
            energy, _ = solver.kernel(self.h1, self.eri, self.space.norb, self._nelec)
        return float(energy), "fci_davidson_sector"


def estimate_memory_bytes(space: SectorSpace, tables_bytes: int) -> int:
    """Peak bytes: ~6 sector vectors, PySCF's contract_2e intermediates (~3 x norb^2 sector vectors) and
    the pair tables."""
    return (6 + 3 * space.norb**2) * space.dim * 8 + tables_bytes


# ---------------------------------------------------------------------------------------------- state
class SectorAnsatz:
    """A product of excitation rotations on the HF determinant, parameters ``theta`` (radians)."""

    def __init__(self, space: SectorSpace, tables: ExcitationTables, num_parameters: int):
        self.space = space
        self.tables = tables
        self.num_parameters = num_parameters
        t = tables
        self._args = (t.kind, t.const, t.a_ptr, t.a_src, t.a_dst, t.a_sgn, t.b_ptr, t.b_src, t.b_dst, t.b_sgn)

    def angles(self, theta: np.ndarray) -> np.ndarray:
        return self.tables.scale * np.asarray(theta, dtype=float)[self.tables.param]

    def state(self, theta: np.ndarray) -> np.ndarray:
        """Sector state psi(theta) (real, normalised)."""
        psi = self.space.hartree_fock()
        _forward(psi, self.angles(theta), *self._args)
        return psi

    def gradient(self, theta: np.ndarray, psi: np.ndarray, h_psi: np.ndarray) -> np.ndarray:
        """dE/dtheta of E = <psi|H|psi> from the final state and H psi (one adjoint sweep)."""
        d_angle = _backward(psi.copy(), h_psi.copy(), self.angles(theta), *self._args)
        return np.bincount(
            self.tables.param, weights=d_angle * self.tables.scale, minlength=self.num_parameters
        )


class SectorEnergyEvaluator:
    """E(theta) and its gradient in the electron sector; the runner's evaluator interface (exact only)."""

    shots = None

    def __init__(self, ansatz: SectorAnsatz, hamiltonian: SectorHamiltonian):
        self.ansatz = ansatz
        self.hamiltonian = hamiltonian
        self.num_evaluations = 0

    def energy_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Electronic energy (hartree) and dE/dtheta (hartree/rad)."""
        self.num_evaluations += 1
        psi = self.ansatz.state(theta)
        h_psi = self.hamiltonian.apply(psi)
        return float(np.vdot(psi, h_psi)), self.ansatz.gradient(theta, psi, h_psi)

    def energy_exact(self, theta: np.ndarray) -> float:
        self.num_evaluations += 1
        psi = self.ansatz.state(theta)
        return float(np.vdot(psi, self.hamiltonian.apply(psi)))


@numba.njit(cache=True, nogil=True)
def _append_gradients(h_psi, psi, kind, const, a_ptr, a_src, a_dst, a_sgn, b_ptr, b_src, b_dst, b_sgn):
    out = np.empty(len(kind))
    for k in range(len(kind)):
        out[k] = 2.0 * _overlap_generator(h_psi, psi, k, kind, const, a_ptr, a_src, a_dst, a_sgn, b_ptr, b_src,
                                          b_dst, b_sgn)  # fmt: skip
    return out


def append_gradients(tables: ExcitationTables, psi: np.ndarray, h_psi: np.ndarray) -> np.ndarray:
    """For each excitation k of ``tables``: dE/dtheta at theta = 0 when ``exp(theta A_k)`` is appended after
    the state psi, i.e. ``<psi|[H, A_k]|psi> = 2 <H psi|A_k|psi>`` (hartree/rad); ADAPT-VQE's selection
    criterion, for the whole pool in one compiled sweep."""
    t = tables
    return _append_gradients(h_psi, psi, t.kind, t.const, t.a_ptr, t.a_src, t.a_dst, t.a_sgn, t.b_ptr, t.b_src,
                             t.b_dst, t.b_sgn)  # fmt: skip
