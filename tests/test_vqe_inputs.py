"""Unit tests of the VQE input contracts: Molecule, VQEConfig, experiment ids (no simulation)."""

from __future__ import annotations

import pytest

from qp_assets.vqe.config import OPTIMIZERS, VQEConfig, experiment_id
from qp_assets.vqe.errors import InputError
from qp_assets.vqe.molecule import BOHR_TO_ANGSTROM, Molecule, load_molecules
from qp_assets.vqe.runner import molecule_key

H2 = {"name": "H2", "symbols": ["H", "H"], "coords": [[0, 0, 0], [0, 0, 0.7414]]}


def test_shipped_molecules_match_shared_reference():
    mols = load_molecules()
    assert list(mols)[:6] == ["H2", "HeH+", "LiH", "BeH2", "H2O", "NH3"]
    assert mols["LiH"].num_electrons == 4
    assert mols["HeH+"].charge == 1 and mols["HeH+"].num_electrons == 2
    assert mols["H2"].extra["e_fci"] == pytest.approx(-1.13727017)


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"symbols": ["H", "Xx"]}, "symbols[1]"),
        ({"coords": [[0, 0, 0], [0, 0]]}, "coords[1]"),
        ({"coords": [[0, 0, 0]]}, "'coords'"),
        ({"coords": [[0, 0, 0], [0, 0, 0.05]]}, "apart"),
        ({"multiplicity": 2}, "'multiplicity'"),
        ({"charge": 2}, "'charge'"),
        ({"units": "furlong"}, "'units'"),
        ({"charge": 0.5}, "'charge'"),
    ],
)
def test_bad_molecule_names_molecule_and_field(patch, needle):
    with pytest.raises(InputError) as info:
        Molecule.from_dict({**H2, **patch})
    assert "molecule H2" in str(info.value) and needle in str(info.value)
    assert isinstance(info.value, ValueError)


def test_bohr_units_convert_to_angstrom():
    mol = Molecule.from_dict({**H2, "coords": [[0, 0, 0], [0, 0, 1.4]], "units": "bohr"})
    assert mol.coords_angstrom[1][2] == pytest.approx(1.4 * BOHR_TO_ANGSTROM)
    assert mol.to_dict()["units"] == "bohr"


def test_unknown_optimizer_lists_valid_names():
    with pytest.raises(InputError) as info:
        VQEConfig(optimizer="adam")
    for name in OPTIMIZERS:
        assert name in str(info.value)


def test_config_normalises_aliases_and_round_trips():
    cfg = VQEConfig.from_dict(
        {"mapper": "JW", "optimizer": "l-bfgs-b", "backend_method": "mps", "ansatz": "UCCSD"}
    )
    assert (cfg.mapper, cfg.optimizer, cfg.backend_method, cfg.ansatz) == (
        "jordan_wigner", "L-BFGS-B", "matrix_product_state", "uccsd",
    )  # fmt: skip
    assert VQEConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(InputError, match="unknown field"):
        VQEConfig.from_dict({"bogus": 1})
    with pytest.raises(InputError, match="active_orbitals"):
        VQEConfig(active_electrons=2)
    with pytest.raises(InputError, match="initial_state"):
        VQEConfig(ansatz="uccsd", initial_state="zeros")
    with pytest.raises(InputError, match="'shots'"):
        VQEConfig(shots=0)


def test_experiment_id_ignores_seed_and_budgets_but_not_configuration():
    mol = Molecule.from_dict(H2)
    key = molecule_key(mol)
    base = experiment_id(key, VQEConfig(seed=1, max_iterations=10))
    assert base == experiment_id(key, VQEConfig(seed=2, max_iterations=99, max_evaluations=5))
    assert base != experiment_id(key, VQEConfig(basis="6-31g"))
    renamed = Molecule.from_dict({**H2, "name": "hydrogen"})
    assert base == experiment_id(molecule_key(renamed), VQEConfig())
