"""`qp vqe` command line: summary, JSON output, inline molecules, exit code 2 on bad input."""

from __future__ import annotations

import pytest

from qp_assets.cli import main
from qp_assets.vqe.result import VQEResult


def qp(*argv: str) -> int:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    return int(info.value.code)


def test_run_prints_summary_and_writes_json(tmp_path, capsys):
    out = tmp_path / "h2.json"
    assert qp("vqe", "run", "-m", "H2", "--no-progress", "--no-monitor", "--json", str(out)) == 0
    text = capsys.readouterr().out
    assert "error" in text and "within chemical accuracy" in text and "device          CPU" in text
    result = VQEResult.from_json(out.read_text())
    assert result.molecule_name == "H2" and abs(result.error_vs_exact_mha) <= 1.6


def test_json_to_stdout_and_inline_molecule_in_bohr(capsys):
    code = qp(
        "vqe", "run", "--symbols", "H,H", "--coords", "0,0,0;0,0,1.4", "--units", "bohr", "--name", "h2b",
        "--no-progress", "--no-monitor", "--json", "-",
    )  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    result = VQEResult.from_json(captured.out)
    assert result.molecule["units"] == "bohr"
    assert result.molecule["coords"][1][2] == pytest.approx(1.4 * 0.529177210903)
    assert result.total_energy == pytest.approx(-1.13728, abs=1.6e-3)  # H2 at 1.4 bohr (~0.7408 A)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["-m", "H2", "--charge", "1"], "molecule H2: field 'multiplicity'"),
        (["-m", "H2", "--optimizer", "adam"], "field 'optimizer'"),
        (["-m", "Unobtainium"], "molecule Unobtainium: field 'name'"),
        (["--symbols", "H,Qq", "--coords", "0,0,0;0,0,1"], "field 'symbols[1]'"),
        (["--symbols", "H,H", "--coords", "0,0,0;0,0"], "field 'coords[1]'"),
        (["-m", "LiH", "--active-space", "2,40"], "molecule LiH: field 'active_orbitals'"),
        (["-m", "H2", "--basis", "nope-basis"], "molecule H2: field 'basis'"),
        (["-m", "H2", "--device", "GPU"], "field 'device'"),
        (["-m", "H2", "--basis", "cc-pvtz", "--ansatz", "puccd"], "molecule H2: field 'num_qubits' = 56"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(argv, needle, capsys):
    assert qp("vqe", "run", *argv, "--no-progress", "--no-monitor") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("qp vqe run: error: ") and needle in err[0]
