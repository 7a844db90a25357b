"""The simulation configuration of a VQE request (ARCHITECTURE.md section 4).

Names are normalised (case-insensitive, aliases accepted) and validated; an unknown name is an
:class:`InputError` listing the valid ones, never a silent fallback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from qp_assets.vqe.errors import InputError

MAPPERS = ("jordan_wigner", "parity", "bravyi_kitaev")
_MAPPER_ALIASES = {"jw": "jordan_wigner", "jordanwigner": "jordan_wigner", "bk": "bravyi_kitaev",
                   "bravyikitaev": "bravyi_kitaev", "parity": "parity"}  # fmt: skip

CHEMISTRY_ANSATZES = ("uccsd", "puccd", "succd", "adapt")
HARDWARE_ANSATZES = ("efficient_su2", "real_amplitudes", "excitation_preserving")
ANSATZES = CHEMISTRY_ANSATZES + HARDWARE_ANSATZES
INITIAL_STATES = ("hartree_fock", "random", "zeros")

SCIPY_OPTIMIZERS = ("L-BFGS-B", "BFGS", "SLSQP", "CG", "TNC", "trust-constr", "COBYLA", "COBYQA",
                    "Nelder-Mead", "Powell")  # fmt: skip
OPTIMIZERS = SCIPY_OPTIMIZERS + ("SPSA",)
GRADIENT_OPTIMIZERS = ("L-BFGS-B", "BFGS", "SLSQP", "CG", "TNC", "trust-constr")

BACKEND_METHODS = ("statevector", "matrix_product_state")
DEVICES = ("CPU", "GPU", "auto")
KERNELS = ("auto", "sector", "aer")


def _norm(s: str) -> str:
    return str(s).strip().lower().replace("-", "").replace("_", "").replace(" ", "")


def _choose(
    field_name: str, value: Any, valid: tuple[str, ...], aliases: dict[str, str] | None = None
) -> str:
    key = _norm(value)
    for v in valid:
        if _norm(v) == key:
            return v
    if aliases and key in aliases:
        return aliases[key]
    raise InputError(f"config: field '{field_name}' has unknown value {value!r}; valid: {', '.join(valid)}")


@dataclass
class VQEConfig:
    """One VQE simulation configuration.

    - basis: any PySCF basis name (sto3g, 6-31g, cc-pvdz, ...).
    - mapper: jordan_wigner | parity (two-qubit reduction) | bravyi_kitaev.
    - freeze_core / active_electrons + active_orbitals: active-space reductions (both counts or neither).
    - ansatz: uccsd | puccd | succd | adapt | efficient_su2 | real_amplitudes | excitation_preserving;
      reps >= 1 (ignored by adapt).
    - adapt_gradient_threshold (hartree/rad, > 0) / adapt_max_operators (>= 1): ADAPT-VQE stops when the
      largest pool gradient falls below the threshold (success) or after that many operators.
    - initial_state: hartree_fock (HF reference, zero parameters) | random (HF reference, seeded random
      parameters) | zeros (|0...0> reference, zero parameters; hardware-efficient ansatzes only).
    - optimizer: scipy.optimize.minimize method or SPSA; optimizer_options passed through.
    - backend_method: statevector | matrix_product_state; device: CPU | GPU | auto.
    - shots: None = exact expectation values, else sampled estimates with a standard deviation.
    - kernel: auto (electron-sector kernel for UCC-family ansatzes with exact estimation on CPU, else Aer) |
      sector (that kernel or an InputError saying why not) | aer (always Qiskit Aer). Both agree to 1e-10,
      so the kernel is not part of the experiment id.
    - noise: None, or an Aer noise model spec for sampled runs (needs shots): depolarizing:P1,P2[,READOUT]
      or fake:BACKEND (see :mod:`qp_assets.vqe.noise`); stored normalised.
    - seed: makes a run reproducible bit for bit on the same machine.
    - max_iterations: optimizer iteration budget; max_evaluations: energy evaluation budget.
    """

    basis: str = "sto3g"
    mapper: str = "jordan_wigner"
    freeze_core: bool = False
    active_electrons: int | None = None
    active_orbitals: int | None = None
    ansatz: str = "uccsd"
    reps: int = 1
    initial_state: str = "hartree_fock"
    optimizer: str = "L-BFGS-B"
    optimizer_options: dict[str, Any] = field(default_factory=dict)
    backend_method: str = "statevector"
    device: str = "CPU"
    shots: int | None = None
    seed: int | None = None
    max_iterations: int | None = 500
    max_evaluations: int | None = None
    kernel: str = "auto"
    adapt_gradient_threshold: float = 1e-4
    adapt_max_operators: int = 150
    noise: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Normalise names in place and check ranges; raises :class:`InputError`."""
        if not isinstance(self.basis, str) or not self.basis.strip():
            raise InputError(f"config: field 'basis' must be a non-empty string, got {self.basis!r}")
        self.basis = self.basis.strip().lower()
        self.mapper = _choose("mapper", self.mapper, MAPPERS, _MAPPER_ALIASES)
        self.ansatz = _choose(
            "ansatz", self.ansatz, ANSATZES,
            {"efficientsu2": "efficient_su2", "realamplitudes": "real_amplitudes",
             "excitationpreserving": "excitation_preserving"},
        )  # fmt: skip
        self.initial_state = _choose(
            "initial_state", self.initial_state, INITIAL_STATES, {"hf": "hartree_fock"}
        )
        self.optimizer = _choose("optimizer", self.optimizer, OPTIMIZERS)
        self.backend_method = _choose("backend_method", self.backend_method, BACKEND_METHODS,
                                      {"mps": "matrix_product_state"})  # fmt: skip
        self.device = _choose("device", self.device, DEVICES)
        self.kernel = _choose("kernel", self.kernel, KERNELS)
        self.freeze_core = bool(self.freeze_core)
        for name in ("reps",):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"config: field '{name}' must be an integer >= 1, got {v!r}")
        for name in ("shots", "max_iterations", "max_evaluations", "active_electrons", "active_orbitals"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise InputError(f"config: field '{name}' must be a positive integer or null, got {v!r}")
        if (self.active_electrons is None) != (self.active_orbitals is None):
            raise InputError(
                "config: fields 'active_electrons' and 'active_orbitals' must be given together, got "
                f"{self.active_electrons!r}, {self.active_orbitals!r}"
            )
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0
        ):
            raise InputError(
                f"config: field 'seed' must be a non-negative integer or null, got {self.seed!r}"
            )
        if not isinstance(self.optimizer_options, dict):
            raise InputError(
                f"config: field 'optimizer_options' must be an object, got {self.optimizer_options!r}"
            )
        v = self.adapt_gradient_threshold
        if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
            raise InputError(
                f"config: field 'adapt_gradient_threshold' must be a number > 0 (Ha/rad), got {v!r}"
            )
        self.adapt_gradient_threshold = float(v)
        v = self.adapt_max_operators
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"config: field 'adapt_max_operators' must be an integer >= 1, got {v!r}")
        if self.noise is not None:
            from qp_assets.vqe.noise import parse_noise

            self.noise = str(parse_noise(self.noise))
            if self.shots is None:
                raise InputError(
                    f"config: field 'noise' = {self.noise!r} needs shots (a noise model acts on sampled runs)"
                )
        if self.ansatz == "adapt" and self.initial_state != "hartree_fock":
            raise InputError(
                f"config: field 'initial_state' = {self.initial_state!r} is not allowed with ansatz 'adapt' "
                "(ADAPT-VQE grows its ansatz from the Hartree-Fock state with zero parameters)"
            )
        if self.ansatz == "adapt" and self.optimizer == "SPSA":
            raise InputError("config: field 'optimizer' = 'SPSA' is not supported with ansatz 'adapt'")
        if self.ansatz in CHEMISTRY_ANSATZES and self.initial_state == "zeros":
            raise InputError(
                f"config: field 'initial_state' = 'zeros' is not allowed with ansatz {self.ansatz!r} "
                "(the vacuum has no electrons); use hartree_fock or random"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> VQEConfig:
        """Build from a dict with the field names above; unknown keys are an :class:`InputError`."""
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"config: unknown field(s) {unknown}; valid: {', '.join(sorted(names))}")
        if data.get("optimizer_options") is None:
            data.pop("optimizer_options", None)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["optimizer_options"] = dict(self.optimizer_options)
        return d

    def experiment_key(self) -> dict[str, Any]:
        """The fields that define an experiment (everything but seed, budgets and the simulation kernel; the
        ADAPT settings only for ansatz adapt and the noise model only when set, so other experiments keep
        their ids)."""
        d = self.to_dict()
        for k in ("seed", "max_iterations", "max_evaluations", "kernel"):
            d.pop(k)
        if self.ansatz != "adapt":
            d.pop("adapt_gradient_threshold")
            d.pop("adapt_max_operators")
        if self.noise is None:
            d.pop("noise")
        return d


def experiment_id(molecule_key: dict[str, Any], config: VQEConfig) -> str:
    """Deterministic hash (sha256, 32 hex chars) of molecule + configuration (never seed, run id, budgets)."""
    payload = json.dumps(
        {"molecule": molecule_key, "config": config.experiment_key()}, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]
