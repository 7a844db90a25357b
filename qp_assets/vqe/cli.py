"""``qp vqe``: run one VQE simulation from the command line.

Exit codes: 0 ok, 1 failure (e.g. publishing), 2 bad input (one line naming molecule and field).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from qp_assets.cli_errors import USAGE, CliError
from qp_assets.vqe.config import ANSATZES, BACKEND_METHODS, INITIAL_STATES, KERNELS, MAPPERS, OPTIMIZERS
from qp_assets.vqe.errors import InputError

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    vqe = subparsers.add_parser("vqe", help="VQE simulations on Qiskit Aer")
    vqe_sub = vqe.add_subparsers(dest="vqe_command", metavar="SUBCOMMAND")
    vqe.set_defaults(handler=lambda _args: (vqe.print_help(), 2)[1])

    lst = vqe_sub.add_parser("molecules", help="list the molecules of a molecules file")
    lst.add_argument("--molecules-file", type=Path, default=None, help="JSON list (default: shipped file)")
    lst.set_defaults(handler=_list_molecules)

    run = vqe_sub.add_parser("run", help="run one VQE simulation and print a summary")
    _add_molecule_arguments(run.add_argument_group("molecule"))
    _add_run_config_arguments(run.add_argument_group("configuration"))
    o = run.add_argument_group("output")
    o.add_argument("--json", metavar="FILE", help="write the full result as JSON ('-' for stdout)")
    o.add_argument("--request-id", default=None)
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o.add_argument("--publish", action="store_true", help="publish the result to Kafka (schema registry)")
    o.add_argument("--plot", metavar="FILE.png", type=Path, help="save a convergence plot")
    o.add_argument("--monitor", action=argparse.BooleanOptionalAction, default=True,
                   help="record CPU/memory performance snapshots (default on)")  # fmt: skip
    o.add_argument("--monitor-interval", type=float, default=1.0, help="seconds between snapshots")
    o.add_argument("--push-metrics", action="store_true", help="push VQE metrics to the PushGateway")
    run.set_defaults(handler=run_command)

    scan = vqe_sub.add_parser("scan", help="potential-energy scan of one bond length, warm-started")
    _add_molecule_arguments(scan.add_argument_group("molecule"))
    _add_run_config_arguments(scan.add_argument_group("configuration"))
    s = scan.add_argument_group("scan")
    s.add_argument("--stretch", required=True, metavar="I,J", help="0-based atom indices; atom J moves")
    s.add_argument(
        "--from", dest="scan_from", type=float, required=True, help="first I-J distance (angstrom)"
    )
    s.add_argument("--to", dest="scan_to", type=float, required=True, help="last I-J distance (angstrom)")
    s.add_argument("--points", type=int, required=True, help="number of distances, both ends included")
    s.add_argument("--cold", action="store_true", help="start every point from the initial state")
    s.add_argument("--json", metavar="FILE", help="write {points: [...]} as JSON ('-' for stdout)")
    scan.set_defaults(handler=scan_command)


def _add_molecule_arguments(g: Any) -> None:
    g.add_argument("--molecule", "-m", help="molecule name in the molecules file (e.g. H2, LiH)")
    g.add_argument(
        "--molecules-file", type=Path, default=None, help="JSON list of molecules (default: shipped)"
    )
    g.add_argument("--molecule-json", help="inline molecule object as JSON (or @file.json)")
    g.add_argument("--symbols", help="inline molecule: comma-separated symbols, e.g. H,H")
    g.add_argument("--coords", help="inline molecule: 'x,y,z;x,y,z' per atom")
    g.add_argument("--name", help="inline molecule name")
    g.add_argument("--charge", type=int, default=None, help="override/inline charge")
    g.add_argument("--multiplicity", type=int, default=None, help="override/inline multiplicity 2S+1")
    g.add_argument("--units", choices=["angstrom", "bohr"], default=None, help="inline coordinate units")


def _add_run_config_arguments(c: Any) -> None:
    """The configuration options plus those only local runs take (not part of a VQE request)."""
    add_config_arguments(c)
    c.add_argument(
        "--kernel", default="auto", help=f"simulation kernel: one of {', '.join(KERNELS)} (see docs/vqe.md)"
    )
    c.add_argument("--adapt-threshold", type=float, default=1e-4,
                   help="ansatz adapt: stop when the largest pool gradient is below this (Ha/rad)")  # fmt: skip
    c.add_argument("--adapt-max-operators", type=int, default=150, help="ansatz adapt: operator budget")
    c.add_argument("--noise", default=None, metavar="SPEC",
                   help="Aer noise model with --shots: depolarizing:P1,P2[,READOUT] or fake:BACKEND")  # fmt: skip


def add_config_arguments(c: Any) -> None:
    """The VQE configuration options (shared by ``qp vqe run`` and ``qp request submit``)."""
    c.add_argument("--basis", default="sto3g", help="PySCF basis: sto3g, 6-31g, cc-pvdz, ...")
    c.add_argument("--mapper", default="jordan_wigner", help=f"one of {', '.join(MAPPERS)} (jw, bk)")
    c.add_argument("--freeze-core", action="store_true", help="freeze core orbitals")
    c.add_argument("--active-space", metavar="NELEC,NORB", help="active space electrons,spatial orbitals")
    c.add_argument("--ansatz", default="uccsd", help=f"one of {', '.join(ANSATZES)}")
    c.add_argument("--reps", type=int, default=1)
    c.add_argument("--initial-state", default="hartree_fock", help=f"one of {', '.join(INITIAL_STATES)}")
    c.add_argument("--optimizer", default="L-BFGS-B", help=f"one of {', '.join(OPTIMIZERS)}")
    c.add_argument("--optimizer-options", default="{}", help="JSON object passed to the optimizer")
    c.add_argument("--backend", default="statevector", help=f"one of {', '.join(BACKEND_METHODS)} (mps)")
    c.add_argument("--shots", type=int, default=None, help="sample with N shots (default: exact)")
    c.add_argument("--device", default="CPU", help="CPU | GPU | auto")
    c.add_argument("--seed", type=int, default=None)
    c.add_argument("--max-iterations", type=int, default=500)
    c.add_argument("--max-evaluations", type=int, default=None)


def _list_molecules(args: argparse.Namespace) -> int:
    from qp_assets.vqe.molecule import load_molecules

    try:
        mols = load_molecules(args.molecules_file)
    except InputError as exc:
        raise CliError(exc, USAGE) from exc
    for m in mols.values():
        print(f"{m.name:8s} {' '.join(m.symbols):20s} charge={m.charge} mult={m.multiplicity} "
              f"electrons={m.num_electrons}")  # fmt: skip
    return 0


def molecule_from_args(args: argparse.Namespace):
    """The molecule selected by the CLI flags (file entry, inline JSON or --symbols/--coords)."""
    from qp_assets.vqe.molecule import Molecule, load_molecules

    overrides = {
        k: getattr(args, k) for k in ("charge", "multiplicity", "units") if getattr(args, k) is not None
    }
    if args.molecule_json:
        text = args.molecule_json
        if text.startswith("@"):
            text = Path(text[1:]).read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"molecule {args.name or '?'}: --molecule-json is not valid JSON ({exc})"
            ) from None
        if not isinstance(data, dict):
            raise InputError("molecule ?: --molecule-json must be one JSON object")
        return Molecule.from_dict({**data, **overrides, **({"name": args.name} if args.name else {})})
    if args.symbols:
        name = args.name or args.symbols.replace(",", "")
        if not args.coords:
            raise InputError(f"molecule {name}: field 'coords' is required with --symbols")
        try:
            coords = [[float(v) for v in row.split(",")] for row in args.coords.split(";") if row.strip()]
        except ValueError:
            raise InputError(
                f"molecule {name}: field 'coords' must be numbers, got {args.coords!r}"
            ) from None
        symbols = [s.strip() for s in args.symbols.split(",")]
        return Molecule.from_dict({"name": name, "symbols": symbols, "coords": coords, **overrides})
    if not args.molecule:
        raise InputError("molecule ?: give --molecule NAME, --molecule-json or --symbols/--coords")
    mols = load_molecules(args.molecules_file)
    if args.molecule not in mols:
        lower = {k.lower(): k for k in mols}
        if args.molecule.lower() not in lower:
            raise InputError(
                f"molecule {args.molecule}: field 'name' not found; available: {', '.join(mols)}"
            )
        args.molecule = lower[args.molecule.lower()]
    mol = mols[args.molecule]
    return Molecule.from_dict({**mol.to_dict(), **overrides}) if overrides else mol


def _int_pair(text: str, field: str, form: str) -> tuple[int, int]:
    """``"A,B"`` -> ``(A, B)``; anything else is an InputError ``<field> must be <form>, got <text>``."""
    try:
        first, second = (int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{field} must be {form}, got {text!r}") from None
    return first, second


def config_from_args(args: argparse.Namespace):
    from qp_assets.vqe.config import VQEConfig

    try:
        options = json.loads(args.optimizer_options)
    except json.JSONDecodeError as exc:
        raise InputError(f"config: field 'optimizer_options' is not valid JSON ({exc})") from None
    active_e = active_o = None
    if args.active_space:
        active_e, active_o = _int_pair(args.active_space, "config: field 'active_space'", "NELEC,NORB")
    return VQEConfig(
        basis=args.basis, mapper=args.mapper, freeze_core=args.freeze_core, active_electrons=active_e,
        active_orbitals=active_o, ansatz=args.ansatz, reps=args.reps, initial_state=args.initial_state,
        optimizer=args.optimizer, optimizer_options=options, backend_method=args.backend, device=args.device,
        shots=args.shots, seed=args.seed, max_iterations=args.max_iterations,
        max_evaluations=args.max_evaluations, kernel=getattr(args, "kernel", "auto"),
        adapt_gradient_threshold=getattr(args, "adapt_threshold", 1e-4),
        adapt_max_operators=getattr(args, "adapt_max_operators", 150),
        noise=getattr(args, "noise", None),
    )  # fmt: skip


_CHATTY_LOGGERS = ("qiskit", "qiskit_nature", "qiskit_aer", "pyscf", "stevedore")


def scan_command(args: argparse.Namespace) -> int:
    from qp_assets.vqe.scan import run_scan, scan_distances

    _quiet_libraries(args)
    if not getattr(args, "verbose", False):  # one table row per point instead of the per-run log line
        logging.getLogger("qp_assets.vqe.runner").setLevel(logging.WARNING)
    try:
        molecule = molecule_from_args(args)
        config = config_from_args(args)
        i, j = _int_pair(args.stretch, f"molecule {molecule.name}: field 'stretch'", "I,J")
        distances = scan_distances(args.scan_from, args.scan_to, args.points)
        out = sys.stderr if args.json == "-" else sys.stdout
        print(f"{'distance A':>10s} {'energy Ha':>14s} {'exact Ha':>14s} {'error mHa':>9s} {'iters':>5s} {'start':>5s}",
              file=out)  # fmt: skip

        def show(p: dict[str, Any]) -> None:
            exact = f"{p['exact_energy']:14.8f}" if p["exact_energy"] is not None else f"{'n/a':>14s}"
            err = f"{p['error_vs_exact_mha']:9.4f}" if p["error_vs_exact_mha"] is not None else f"{'n/a':>9s}"
            print(f"{p['distance']:10.4f} {p['total_energy']:14.8f} {exact} {err} {p['num_iterations']:5d} "
                  f"{p['initial_point']:>5s}", file=out, flush=True)  # fmt: skip

        result = run_scan(molecule, config, i, j, distances, warm_start=not args.cold, on_point=show)
    except InputError as exc:
        raise CliError(exc, USAGE) from exc
    if args.json:
        text = json.dumps(result, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text)
            print(f"scan written to {args.json}", file=out)
    return 0


def _quiet_libraries(args: argparse.Namespace) -> None:
    if not getattr(args, "verbose", False):  # library INFO logs (transpiler passes, PySCF) only with -v
        for name in _CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def run_command(args: argparse.Namespace) -> int:
    from qp_assets.vqe.runner import run_vqe

    _quiet_libraries(args)
    from qp_assets.vqe.admission import AdmissionLimits, WallClock, admit

    try:
        limits = AdmissionLimits.from_env()
        molecule = molecule_from_args(args)
        config = config_from_args(args)
        admit(molecule, config, limits)  # the admission policy (QP_MAX_*), before any SCF
    except ValueError as exc:  # InputError, or a bad QP_MAX_* variable
        raise CliError(exc, USAGE) from exc
    clock = WallClock(limits.max_wall_s)  # QP_MAX_WALL_S: stops between iterations
    out = sys.stderr if args.json == "-" else sys.stdout
    monitor_mod = None
    if args.monitor:
        from qp_assets.monitoring import monitor as monitor_mod
    try:
        if monitor_mod is not None:
            with monitor_mod.PerformanceMonitor(interval_s=args.monitor_interval) as mon:
                result = run_vqe(molecule, config, request_id=args.request_id, progress=not args.no_progress,
                                 performance_snapshots_provider=mon.snapshots, on_iteration=clock.check)  # fmt: skip
        else:
            result = run_vqe(molecule, config, request_id=args.request_id, progress=not args.no_progress,
                             on_iteration=clock.check)  # fmt: skip
    except InputError as exc:
        raise CliError(exc, USAGE) from exc
    print(result.summary(), file=out)
    if args.json:
        text = result.to_json()
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text)
            print(f"result written to {args.json}", file=out)
    settings = None
    if args.publish or args.push_metrics:
        from qp_assets.settings import Settings

        settings = Settings.from_env()
    try:
        if args.plot:
            from qp_assets.monitoring import plots

            plots.save_convergence_plot(result, args.plot)
            print(f"convergence plot written to {args.plot}", file=out)
        if args.publish:
            from qp_assets.streaming import publisher

            publisher.publish_result(result, settings)
            print("result published", file=out)
        if args.push_metrics:
            from qp_assets.monitoring import metrics

            if metrics.push_vqe_metrics(result, settings.pushgateway_url, timeout_s=2.0):
                print(f"metrics pushed to {settings.pushgateway_url}", file=out)
            else:  # the run is fine; its metrics stay in the JSON result (performance_snapshots)
                print(f"warning: metrics not pushed to {settings.pushgateway_url} (unreachable)", file=out)
    except Exception as exc:  # noqa: BLE001 - report and fail, the result itself is fine
        raise CliError(exc) from exc
    return 0
