"""PES scan benchmark (issue 17): H2 bond scan 0.5..2.5 angstrom, 21 points, warm vs cold starts.

Runs ``run_scan`` twice on the same distances, warm (each point from the previous optimum) and cold (each
point from the Hartree-Fock state, zero parameters), in one warm process, and prints per-point errors vs
the exact energy, iterations, the wall time of each scan and the ratio of total optimizer iterations.

Usage: python benchmarks/vqe_scan.py [--molecule H2] [--stretch 0,1] [--from 0.5] [--to 2.5] [--points 21]
       [--freeze-core]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecule", default="H2")
    parser.add_argument("--stretch", default="0,1")
    parser.add_argument("--from", dest="start", type=float, default=0.5)
    parser.add_argument("--to", dest="stop", type=float, default=2.5)
    parser.add_argument("--points", type=int, default=21)
    parser.add_argument("--freeze-core", action="store_true")
    args = parser.parse_args()

    from qp_assets.vqe.config import VQEConfig
    from qp_assets.vqe.molecule import load_molecules
    from qp_assets.vqe.runner import run_vqe
    from qp_assets.vqe.scan import run_scan, scan_distances

    mol = load_molecules()[args.molecule]
    config = VQEConfig(freeze_core=args.freeze_core)
    run_vqe(mol, config, progress=False)  # warm-up: first-use imports and compiled kernels
    i, j = (int(v) for v in args.stretch.split(","))
    distances = scan_distances(args.start, args.stop, args.points)
    scans, walls = {}, {}
    for mode in ("warm", "cold"):
        t0 = time.perf_counter()
        scans[mode] = run_scan(mol, config, i, j, distances, warm_start=mode == "warm")["points"]
        walls[mode] = time.perf_counter() - t0

    print(f"{args.molecule} scan of atoms {i}-{j}, {args.points} points {args.start}..{args.stop} angstrom")
    header = f"{'distance A':>10s} {'energy Ha':>14s} {'error mHa':>9s} {'warm it':>7s} {'cold it':>7s}"
    print(header)
    print("-" * len(header))
    for warm, cold in zip(scans["warm"], scans["cold"], strict=True):
        print(f"{warm['distance']:10.3f} {warm['total_energy']:14.8f} {warm['error_vs_exact_mha']:9.4f} "
              f"{warm['num_iterations']:7d} {cold['num_iterations']:7d}")  # fmt: skip
    worst = max(abs(p["error_vs_exact_mha"]) for mode in scans for p in scans[mode])
    its = {mode: sum(p["num_iterations"] for p in scans[mode]) for mode in scans}
    evals = {mode: sum(p["num_evaluations"] for p in scans[mode]) for mode in scans}
    print(
        f"wall: warm scan {walls['warm']:.2f} s, cold scan {walls['cold']:.2f} s; worst |error| {worst:.4f} mHa"
    )
    print(f"iterations: warm {its['warm']}, cold {its['cold']} ({its['cold'] / its['warm']:.2f}x fewer warm); "
          f"evaluations: warm {evals['warm']}, cold {evals['cold']}")  # fmt: skip


if __name__ == "__main__":
    main()
