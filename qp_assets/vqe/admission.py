"""Admission policy: one set of cheap checks that decides whether a VQE request may run at all.

Applied in three places with the same limits: ``qp request submit`` (nothing is published for a refused
request), the Dagster runner before any SCF (a refused request is dead-lettered) and ``qp vqe run``.
Checks, cheapest first, each raising :class:`~qp_assets.vqe.errors.InputError` that names the field,
the value and the limit (and the environment variable that sets it):

1. raw molecule size (``len(symbols)`` against ``QP_MAX_ATOMS``) before the molecule is even validated
   (validation compares every pair of atoms);
2. budgets of the configuration: ``reps``, ``shots``, ``max_iterations``, ``max_evaluations``,
   ``adapt_max_operators``;
3. problem size from the basis set without SCF: PySCF ``gto.M(...).nao`` spatial orbitals, reduced by
   frozen core / active space, -> qubits (``QP_MAX_QUBITS``) and electrons (``QP_MAX_ELECTRONS``);
4. memory, with the engine's own estimators: the electron-sector kernel's
   (:func:`qp_assets.vqe.sector_kernel.estimate_memory_bytes`, C(n_orb, n_alpha) x C(n_orb, n_beta)
   amplitudes) for runs it will take, else Aer's statevector estimate
   (:func:`qp_assets.vqe.simulator.estimate_memory_bytes`, 2^qubits amplitudes), against
   ``QP_MAX_MEMORY_GIB``. The engine still checks the exact figure against free memory when it runs.

The wall-clock budget ``QP_MAX_WALL_S`` is enforced while a run executes (:class:`WallClock`, checked
between optimizer iterations); the run stops with a clear reason and keeps its best parameters.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from qp_assets.settings import load_env
from qp_assets.vqe.errors import InputError

#: (environment variable, field of AdmissionLimits, default, kind) - the documented defaults.
LIMIT_VARIABLES: tuple[tuple[str, str, float, type], ...] = (
    ("QP_MAX_ATOMS", "max_atoms", 50, int),
    ("QP_MAX_ELECTRONS", "max_electrons", 100, int),
    ("QP_MAX_QUBITS", "max_qubits", 28, int),
    ("QP_MAX_MEMORY_GIB", "max_memory_gib", 8.0, float),
    ("QP_MAX_ITERATIONS", "max_iterations", 10_000, int),
    ("QP_MAX_EVALUATIONS", "max_evaluations", 100_000, int),
    ("QP_MAX_SHOTS", "max_shots", 1_000_000, int),
    ("QP_MAX_REPS", "max_reps", 10, int),
    ("QP_MAX_ADAPT_OPERATORS", "max_adapt_operators", 500, int),
    ("QP_MAX_WALL_S", "max_wall_s", 3600.0, float),
)

#: (last atomic number of a period, spatial orbitals of the noble-gas core below it) - what qiskit-nature's
#: FreezeCoreTransformer freezes for main-group elements.
_CORE_BY_PERIOD = ((2, 0), (10, 1), (18, 5), (36, 9), (54, 18), (86, 27), (118, 43))

_SECTOR_ANSATZES = ("uccsd", "puccd", "succd", "adapt")


@dataclass(frozen=True)
class AdmissionLimits:
    max_atoms: int = 50
    max_electrons: int = 100
    max_qubits: int = 28
    max_memory_gib: float = 8.0
    max_iterations: int = 10_000
    max_evaluations: int = 100_000
    max_shots: int = 1_000_000
    max_reps: int = 10
    max_adapt_operators: int = 500
    max_wall_s: float = 3600.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AdmissionLimits:
        """Limits from ``QP_MAX_*`` variables (unset or empty: the default), read through
        :func:`qp_assets.settings.load_env`; a bad value is a ``SettingsError`` (a ValueError) naming the
        variable and the value."""
        loaded = load_env(env)
        values = {name: getattr(loaded, name) for _var, name, _default, _kind in LIMIT_VARIABLES}
        return cls(**{name: value for name, value in values.items() if value is not None})

    def env_name(self, field_name: str) -> str:
        return next(var for var, name, _d, _k in LIMIT_VARIABLES if name == field_name)


@dataclass(frozen=True)
class Admission:
    """What the checks computed for an admitted request (recorded in logs / run metadata)."""

    num_atoms: int
    num_electrons: int
    num_spatial_orbitals: int
    num_qubits: int
    kernel: str
    memory_bytes: int

    def summary(self) -> str:
        return (f"{self.num_atoms} atoms, {self.num_electrons} electrons, {self.num_spatial_orbitals} "
                f"orbitals, {self.num_qubits} qubits, {self.kernel} kernel, ~{self.memory_bytes / 2**20:.1f} MiB")  # fmt: skip


def _refuse(what: str, field_name: str, value: Any, limits: AdmissionLimits, limit_field: str) -> None:
    limit = getattr(limits, limit_field)
    raise InputError(
        f"{what}: field '{field_name}' = {value!r} exceeds the admission limit {limit!r} "
        f"({limits.env_name(limit_field)})"
    )


def check_raw_molecule(data: Any, limits: AdmissionLimits | None = None) -> None:
    """The atom count of a raw molecule dict, before :class:`Molecule` validates it (quadratic in atoms)."""
    limits = limits or AdmissionLimits.from_env()
    if not isinstance(data, dict):
        return  # Molecule.from_dict names the problem
    symbols = data.get("symbols")
    if isinstance(symbols, list | tuple) and len(symbols) > limits.max_atoms:
        _refuse(
            f"molecule {data.get('name') or '?'}", "symbols", f"{len(symbols)} atoms", limits, "max_atoms"
        )


def check_budgets(config: Any, limits: AdmissionLimits | None = None) -> None:
    """Iteration / evaluation / shot / repetition budgets of a :class:`VQEConfig` (or a dict of its fields)."""
    limits = limits or AdmissionLimits.from_env()
    get = config.get if isinstance(config, Mapping) else (lambda k, d=None: getattr(config, k, d))
    for field_name, limit_field in (("reps", "max_reps"), ("shots", "max_shots"),
                                    ("max_iterations", "max_iterations"), ("max_evaluations", "max_evaluations"),
                                    ("adapt_max_operators", "max_adapt_operators")):  # fmt: skip
        value = get(field_name)
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and value > getattr(limits, limit_field)
        ):
            if field_name == "adapt_max_operators" and get("ansatz") != "adapt":
                continue
            _refuse("config", field_name, value, limits, limit_field)


def core_orbitals(atomic_number: int) -> int:
    """Spatial orbitals frozen for one atom (noble-gas core of the previous period)."""
    for last_z, core in _CORE_BY_PERIOD:
        if atomic_number <= last_z:
            return core
    return _CORE_BY_PERIOD[-1][1]


def spatial_orbitals(molecule: Any, basis: str) -> int:
    """Spatial orbitals of the molecule in ``basis`` from PySCF's basis-set size (no SCF, milliseconds)."""
    from pyscf import gto

    try:
        mol = gto.M(atom=molecule.pyscf_atom(), basis=basis, charge=molecule.charge, spin=molecule.spin,
                    unit="angstrom", verbose=0)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - PySCF raises several types for unknown bases/elements
        reason = " ".join(str(exc).split())[:300]
        raise InputError(
            f"molecule {molecule.name}: field 'basis' = {basis!r} is unusable ({reason})"
        ) from None
    return int(mol.nao)


def will_use_sector_kernel(config: Any) -> bool:
    """Whether the engine will run this configuration on the electron-sector kernel (see runner)."""
    if config.kernel == "aer":
        return False
    return (config.ansatz in _SECTOR_ANSATZES and config.shots is None
            and config.backend_method == "statevector" and config.device == "CPU")  # fmt: skip


def estimate_memory(num_qubits: int, norb: int, nalpha: int, nbeta: int, config: Any) -> tuple[str, int]:
    """(kernel, bytes) using the engine's estimators (the sector kernel's without its excitation tables,
    Aer's statevector vectors without the sparse Hamiltonian: lower bounds, enough to refuse the absurd)."""
    if will_use_sector_kernel(config):
        from qp_assets.vqe import sector_kernel

        space = SimpleNamespace(norb=norb, dim=math.comb(norb, nalpha) * math.comb(norb, nbeta))
        return "sector", int(sector_kernel.estimate_memory_bytes(space, 0))  # type: ignore[arg-type]
    from qp_assets.vqe.simulator import estimate_memory_bytes

    return "aer", int(estimate_memory_bytes(num_qubits, None, 0, True))  # type: ignore[arg-type]


def admit(molecule: Any, config: Any, limits: AdmissionLimits | None = None) -> Admission:
    """Every admission check for a validated Molecule and VQEConfig; raises InputError on the first
    refusal, else returns the computed sizes."""
    limits = limits or AdmissionLimits.from_env()
    what = f"molecule {molecule.name}"
    n_atoms = len(molecule.symbols)
    if n_atoms > limits.max_atoms:
        _refuse(what, "symbols", f"{n_atoms} atoms", limits, "max_atoms")
    check_budgets(config, limits)
    n_el = int(molecule.num_electrons)
    if n_el > limits.max_electrons:
        _refuse(what, "num_electrons", n_el, limits, "max_electrons")
    norb = spatial_orbitals(molecule, config.basis)
    if config.freeze_core:
        from qp_assets.vqe.molecule import atomic_number

        core = sum(core_orbitals(atomic_number(s) or 0) for s in molecule.symbols)
        norb, n_el = norb - core, n_el - 2 * core
    if config.active_orbitals is not None:
        norb, n_el = min(norb, config.active_orbitals), min(n_el, config.active_electrons)
    qubits = 2 * norb - (2 if config.mapper == "parity" else 0)
    if qubits > limits.max_qubits:
        raise InputError(
            f"{what}: field 'num_qubits' = {qubits} ({norb} spatial orbitals in basis {config.basis!r}"
            f"{', frozen core' if config.freeze_core else ''}) exceeds the admission limit {limits.max_qubits} "
            "(QP_MAX_QUBITS); use --freeze-core or --active-space"
        )
    nalpha = (n_el + molecule.spin) // 2
    nbeta = n_el - nalpha
    kernel, needed = estimate_memory(qubits, norb, max(nalpha, 0), max(nbeta, 0), config)
    if needed > limits.max_memory_gib * 2**30:
        raise InputError(
            f"{what}: field 'num_qubits' = {qubits} needs about {needed / 2**30:.2f} GiB on the {kernel} kernel, "
            f"more than the admission limit {limits.max_memory_gib} GiB (QP_MAX_MEMORY_GIB)"
        )
    return Admission(n_atoms, n_el, norb, qubits, kernel, needed)


class WallClock:
    """A per-run deadline: pass :meth:`check` as ``run_vqe(on_iteration=...)``; after ``limit_s`` seconds
    it raises the optimizer's BudgetExceeded, so the run stops between iterations with the reason
    recorded in ``optimizer_result.message`` and keeps its best parameters so far."""

    def __init__(self, limit_s: float | None = None, then: Any = None):
        self.limit_s = AdmissionLimits.from_env().max_wall_s if limit_s is None else float(limit_s)
        self.started = time.monotonic()
        self.then = then

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def check(self, record: dict[str, Any] | None = None) -> None:
        if self.then is not None and record is not None:
            self.then(record)
        if self.elapsed_s > self.limit_s:
            from qp_assets.vqe.optimizers import BudgetExceeded

            raise BudgetExceeded(
                f"wall-clock limit {self.limit_s:g} s (QP_MAX_WALL_S) reached after {self.elapsed_s:.1f} s"
            )


def admit_request(request: Mapping[str, Any], limits: AdmissionLimits | None = None) -> Admission:
    """The admission policy for a request dict (flat VQE fields beside ``molecule``, or ``config``): the raw
    atom count first, then the budgets on the raw values, then :func:`admit`."""
    from qp_assets.vqe.config import VQEConfig
    from qp_assets.vqe.molecule import Molecule

    limits = limits or AdmissionLimits.from_env()
    check_raw_molecule(request.get("molecule"), limits)
    if isinstance(request.get("config"), Mapping):
        fields = dict(request["config"])
    else:
        names = set(VQEConfig.__dataclass_fields__)
        fields = {k: v for k, v in request.items() if k in names}
    check_budgets(fields, limits)
    if isinstance(fields.get("optimizer_options"), str):
        import json

        fields["optimizer_options"] = json.loads(fields["optimizer_options"] or "{}")
    molecule = request.get("molecule")
    if not isinstance(molecule, dict):
        raise InputError(f"request {request.get('request_id')!r}: field 'molecule' missing or not an object")
    return admit(Molecule.from_dict(molecule), VQEConfig.from_dict(fields), limits)


def check_molecules_file(path: Any) -> None:
    """Atom counts of every molecule of a JSON molecules file (None: the shipped file, nothing to check)."""
    if path is None:
        return
    import json
    from pathlib import Path

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return  # load_molecules reports unreadable files with its own message
    limits = AdmissionLimits.from_env()
    for item in data if isinstance(data, list) else [data]:
        check_raw_molecule(item, limits)
