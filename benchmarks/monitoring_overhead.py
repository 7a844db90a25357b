"""Monitoring overhead: the same VQE run with and without the PerformanceMonitor, side by side.

Runs are alternated (off/on, then on/off, ...) after one warm-up run so import and cache effects and
machine-load drift hit both sides equally. Prints one row per repetition, the medians and the overhead
(median on / median off - 1; target < 5 %), plus the cost of one monitor sample.

    .venv/bin/python benchmarks/monitoring_overhead.py                       # LiH (frozen core), 8 pairs
    .venv/bin/python benchmarks/monitoring_overhead.py --molecule H2 --repeats 10 --interval 0.1
    .venv/bin/python benchmarks/monitoring_overhead.py --push                # also push to the PushGateway
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--molecule", default="LiH", help="shipped molecule name (default LiH)")
    parser.add_argument("--no-freeze-core", action="store_true", help="do not freeze core orbitals")
    parser.add_argument("--repeats", type=int, default=8, help="pairs of runs (default 8)")
    parser.add_argument("--interval", type=float, default=1.0, help="monitor sampling interval, seconds")
    parser.add_argument(
        "--push", action="store_true", help="monitored runs also push metrics (PUSHGATEWAY_URL)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.interval <= 0:
        print("error: --repeats must be >= 1 and --interval > 0", file=sys.stderr)
        return 2

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from tqdm import tqdm

    from qp_assets.monitoring.metrics import push_vqe_metrics
    from qp_assets.monitoring.monitor import PerformanceMonitor
    from qp_assets.settings import Settings
    from qp_assets.vqe.config import VQEConfig
    from qp_assets.vqe.molecule import load_molecules
    from qp_assets.vqe.runner import run_vqe

    molecules = load_molecules()
    if args.molecule not in molecules:
        print(f"error: --molecule {args.molecule!r} not in {sorted(molecules)}", file=sys.stderr)
        return 2
    molecule = molecules[args.molecule]
    config = VQEConfig(seed=11, freeze_core=not args.no_freeze_core)
    pushgateway = Settings.from_env().pushgateway_url

    def run(monitored: bool) -> tuple[float, float]:
        """(wall seconds, process CPU seconds incl. all threads) of one run."""
        t0, c0 = time.perf_counter(), time.process_time()
        if monitored:
            with PerformanceMonitor(interval_s=args.interval) as monitor:
                result = run_vqe(
                    molecule, config, progress=False, performance_snapshots_provider=monitor.snapshots
                )
            if args.push:
                push_vqe_metrics(result, pushgateway, timeout_s=2.0)
        else:
            result = run_vqe(molecule, config, progress=False)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert result.error_vs_exact_mha is None or abs(result.error_vs_exact_mha) < 1.6
        return elapsed, cpu

    run(False)  # warm-up: imports, PySCF/Aer initialisation
    off: list[tuple[float, float]] = []
    on: list[tuple[float, float]] = []
    for rep in tqdm(range(args.repeats), desc="pairs", unit="pair", file=sys.stderr):
        order = (False, True) if rep % 2 == 0 else (True, False)
        for monitored in order:
            (on if monitored else off).append(run(monitored))

    monitor = PerformanceMonitor()
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        monitor.sample()
    sample_us = (time.perf_counter() - t0) / n * 1e6

    label = "monitor" + ("+push" if args.push else "")
    print(f"\nVQE {args.molecule} (freeze_core={config.freeze_core}), monitor interval {args.interval:g} s")
    print(f"{'pair':>4}  {'wall off (s)':>12}  {'wall ' + label + ' (s)':>20}  {'ratio':>6}"
          f"  {'CPU off (s)':>11}  {'CPU ' + label + ' (s)':>19}  {'ratio':>6}")  # fmt: skip
    for i, ((wa, ca), (wb, cb)) in enumerate(zip(off, on, strict=True), 1):
        print(f"{i:>4}  {wa:>12.3f}  {wb:>20.3f}  {wb / wa:>6.3f}  {ca:>11.3f}  {cb:>19.3f}  {cb / ca:>6.3f}")
    wall_off, wall_on = statistics.median(w for w, _ in off), statistics.median(w for w, _ in on)
    cpu_off, cpu_on = statistics.median(c for _, c in off), statistics.median(c for _, c in on)
    print(f"{'med':>4}  {wall_off:>12.3f}  {wall_on:>20.3f}  {wall_on / wall_off:>6.3f}"
          f"  {cpu_off:>11.3f}  {cpu_on:>19.3f}  {cpu_on / cpu_off:>6.3f}")  # fmt: skip
    pair_ratio = statistics.median(b[0] / a[0] for a, b in zip(off, on, strict=True))
    print(f"\nwall-time overhead: {(wall_on / wall_off - 1) * 100:+.2f} % (medians), "
          f"{(pair_ratio - 1) * 100:+.2f} % (median of pair ratios)  (target < 5 %)")  # fmt: skip
    print(
        f"CPU-time overhead:  {(cpu_on / cpu_off - 1) * 100:+.2f} % (medians; less sensitive to other load than wall time)"
    )
    print(f"one monitor sample costs {sample_us:.1f} us on the sampler thread "
          f"({sample_us / (args.interval * 1e6) * 100:.4f} % of one core at this interval)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
