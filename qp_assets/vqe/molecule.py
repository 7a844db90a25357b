"""Validated molecule input (the molecule contract of ARCHITECTURE.md section 4).

Coordinates are stored in the units the user gave (``units``); :attr:`Molecule.coords_angstrom` converts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from qp_assets.vqe.errors import InputError

BOHR_TO_ANGSTROM = 0.529177210903
MIN_DISTANCE_ANGSTROM = 0.1

# Element symbols up to Og; index + 1 = atomic number.
ELEMENTS: tuple[str, ...] = tuple(
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr "
    "Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb "
    "Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf "
    "Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og".split()
)
_ATOMIC_NUMBER = {s.lower(): i + 1 for i, s in enumerate(ELEMENTS)}

SHIPPED_MOLECULES_FILE = "molecules.json"


def atomic_number(symbol: str) -> int | None:
    """Atomic number of an element symbol (case-insensitive), or None if unknown."""
    return _ATOMIC_NUMBER.get(str(symbol).strip().lower())


def canonical_symbol(symbol: str) -> str:
    z = atomic_number(symbol)
    return ELEMENTS[z - 1] if z else symbol


@dataclass(frozen=True)
class Molecule:
    """A validated molecule: symbols, coordinates (in ``units``), charge, spin multiplicity (2S+1)."""

    name: str
    symbols: tuple[str, ...]
    coords: tuple[tuple[float, float, float], ...]
    charge: int = 0
    multiplicity: int = 1
    units: str = "angstrom"
    masses: tuple[float, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: dict[str, Any], *, default_name: str | None = None) -> Molecule:
        """Build from the JSON contract ``{name?, symbols[], coords[[x,y,z]...], charge=0, multiplicity=1,
        units="angstrom"|"bohr", masses?}``; unknown keys are kept in :attr:`extra` (e.g. reference energies).

        Raises :class:`InputError` naming the molecule and the offending field/value.
        """
        if not isinstance(data, dict):
            raise InputError(f"molecule {default_name or '?'}: expected an object, got {type(data).__name__}")
        name = str(data.get("name") or default_name or "".join(map(str, data.get("symbols") or [])) or "?")
        known = {"name", "symbols", "coords", "charge", "multiplicity", "units", "masses"}
        symbols = data.get("symbols")
        if not isinstance(symbols, list | tuple) or not symbols:
            raise InputError(f"molecule {name}: field 'symbols' must be a non-empty list, got {symbols!r}")
        coords_raw = data.get("coords")
        coords = _parse_coords(name, coords_raw, len(symbols))
        charge = _parse_int(name, "charge", data.get("charge", 0))
        multiplicity = _parse_int(name, "multiplicity", data.get("multiplicity", 1))
        units = str(data.get("units", "angstrom")).strip().lower()
        masses_raw = data.get("masses")
        masses: tuple[float, ...] | None = None
        if masses_raw is not None:
            if not isinstance(masses_raw, list | tuple) or len(masses_raw) != len(symbols):
                raise InputError(
                    f"molecule {name}: field 'masses' must list one mass per atom ({len(symbols)}), got {masses_raw!r}"
                )
            try:
                masses = tuple(float(m) for m in masses_raw)
            except (TypeError, ValueError):
                raise InputError(
                    f"molecule {name}: field 'masses' must be numbers, got {masses_raw!r}"
                ) from None
        return cls(
            name=name,
            symbols=tuple(str(s) for s in symbols),
            coords=coords,
            charge=charge,
            multiplicity=multiplicity,
            units=units,
            masses=masses,
            extra={k: v for k, v in data.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        """The input contract form (coords in ``units``)."""
        out: dict[str, Any] = {
            "name": self.name,
            "symbols": list(self.symbols),
            "coords": [list(c) for c in self.coords],
            "charge": self.charge,
            "multiplicity": self.multiplicity,
            "units": self.units,
        }
        if self.masses is not None:
            out["masses"] = list(self.masses)
        return out

    # ------------------------------------------------------------------ derived
    @property
    def coords_angstrom(self) -> tuple[tuple[float, float, float], ...]:
        if self.units == "angstrom":
            return self.coords
        return tuple(tuple(x * BOHR_TO_ANGSTROM for x in c) for c in self.coords)  # type: ignore[misc]

    @property
    def num_electrons(self) -> int:
        return sum(atomic_number(s) or 0 for s in self.symbols) - self.charge

    @property
    def spin(self) -> int:
        """2S = N_alpha - N_beta."""
        return self.multiplicity - 1

    def pyscf_atom(self) -> str:
        """PySCF atom string in angstrom."""
        return "; ".join(
            f"{canonical_symbol(s)} {x:.10f} {y:.10f} {z:.10f}"
            for s, (x, y, z) in zip(self.symbols, self.coords_angstrom, strict=True)
        )

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        name = self.name
        for i, s in enumerate(self.symbols):
            if atomic_number(s) is None:
                raise InputError(f"molecule {name}: field 'symbols[{i}]' has unknown element {s!r}")
        if len(self.coords) != len(self.symbols):
            raise InputError(
                f"molecule {name}: field 'coords' must have one [x, y, z] per atom "
                f"({len(self.symbols)}), got {len(self.coords)} rows"
            )
        if self.units not in ("angstrom", "bohr"):
            raise InputError(
                f"molecule {name}: field 'units' must be 'angstrom' or 'bohr', got {self.units!r}"
            )
        if self.multiplicity < 1:
            raise InputError(f"molecule {name}: field 'multiplicity' must be >= 1, got {self.multiplicity}")
        n_el = self.num_electrons
        if n_el < 1:
            raise InputError(
                f"molecule {name}: field 'charge' = {self.charge} leaves {n_el} electrons "
                f"(nuclear charge {n_el + self.charge})"
            )
        if (n_el - self.spin) % 2 != 0 or self.spin > n_el:
            raise InputError(
                f"molecule {name}: field 'multiplicity' = {self.multiplicity} is impossible with "
                f"{n_el} electrons (charge {self.charge}); parity of electrons and 2S must match"
            )
        xyz = self.coords_angstrom
        for i in range(len(xyz)):
            for j in range(i + 1, len(xyz)):
                d = math.dist(xyz[i], xyz[j])
                if d < MIN_DISTANCE_ANGSTROM:
                    raise InputError(
                        f"molecule {name}: field 'coords' puts atoms {i} ({self.symbols[i]}) and {j} "
                        f"({self.symbols[j]}) {d:.4f} angstrom apart (< {MIN_DISTANCE_ANGSTROM})"
                    )
        if self.masses is not None and any(not (m > 0) for m in self.masses):
            raise InputError(f"molecule {name}: field 'masses' must be positive, got {list(self.masses)}")


def _parse_int(name: str, field_name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise InputError(f"molecule {name}: field '{field_name}' must be an integer, got {value!r}")
    return int(value)


def _parse_coords(name: str, raw: Any, n_atoms: int) -> tuple[tuple[float, float, float], ...]:
    if not isinstance(raw, list | tuple):
        raise InputError(f"molecule {name}: field 'coords' must be an N x 3 list, got {raw!r}")
    if len(raw) != n_atoms:
        raise InputError(
            f"molecule {name}: field 'coords' must have one [x, y, z] per atom ({n_atoms}), got {len(raw)} rows"
        )
    rows = []
    for i, row in enumerate(raw):
        if not isinstance(row, list | tuple) or len(row) != 3:
            raise InputError(f"molecule {name}: field 'coords[{i}]' must be [x, y, z], got {row!r}")
        try:
            vals = tuple(float(v) for v in row)
        except (TypeError, ValueError):
            raise InputError(f"molecule {name}: field 'coords[{i}]' must be numbers, got {row!r}") from None
        if not all(math.isfinite(v) for v in vals):
            raise InputError(f"molecule {name}: field 'coords[{i}]' must be finite, got {row!r}")
        rows.append(vals)
    return tuple(rows)  # type: ignore[return-value]


def shipped_molecules_path() -> Path:
    """Path of the shipped molecules file (copy of the shared reference molecules)."""
    return Path(str(resources.files("qp_assets.vqe") / "data" / SHIPPED_MOLECULES_FILE))


def load_molecules(path: str | Path | None = None) -> dict[str, Molecule]:
    """Load a JSON list (or a single object) of molecules; returns ``{name: Molecule}`` in file order.

    ``path=None`` loads the shipped file. Raises :class:`InputError` on unreadable files or bad molecules.
    """
    p = Path(path) if path is not None else shipped_molecules_path()
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(f"molecules file {p}: not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"molecules file {p}: invalid JSON ({exc})") from None
    items = data if isinstance(data, list) else [data]
    out: dict[str, Molecule] = {}
    for i, item in enumerate(items):
        mol = Molecule.from_dict(item, default_name=f"{p.name}[{i}]")
        out[mol.name] = mol
    return out


def molecule_record(molecule: Molecule) -> dict[str, Any]:
    """The result schema's Molecule record (coords in angstrom)."""
    return {
        "name": molecule.name,
        "symbols": list(molecule.symbols),
        "coords": [[float(v) for v in c] for c in molecule.coords_angstrom],
        "charge": molecule.charge,
        "multiplicity": molecule.multiplicity,
        "units": molecule.units,
        "masses": list(molecule.masses) if molecule.masses is not None else None,
        "num_electrons": molecule.num_electrons,
    }


def molecule_key(molecule: Molecule) -> dict[str, Any]:
    """Identity of a molecule for experiment ids (coords in angstrom rounded to 1e-8, name excluded)."""
    rec = molecule_record(molecule)
    rec.pop("name")
    rec.pop("units")
    rec["coords"] = [[round(v, 8) for v in c] for c in rec["coords"]]
    return rec
