"""Cold vs warm ``qp stack up`` times and resident memory per service, measured side by side in one run.

Runs a private copy of the stack on shifted ports (+20000 by default) with its own runtime directory,
so the shared stack on the default ports keeps running. The jar folders are shared with the project's
runtime dir (``lib/`` symlink: "jars cached"), everything else starts empty:

- cold: empty data dirs (Kafka storage format, registry DB creation, bucket creation);
- warm: the same data dirs after a ``down`` (the normal ``qp stack up`` on a used machine).

Each service is started in order with its own ``ensure_up([name])`` call, so the table shows per-service
seconds as well as the total. Targets (issue 2): warm < 60 s, total RSS < 4 GB.

Usage: ``python benchmarks/stack_startup.py [--warm-runs N] [--port-shift 20000] [--keep-dir]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _isolated_env(home: Path, shift: int) -> dict[str, str]:
    return {
        "QP_HOME": str(home),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{9092 + shift}",
        "QP_KAFKA_CONTROLLER_PORT": str(9093 + shift),
        "SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{8081 + shift}/apis/ccompat/v7",
        "QP_REGISTRY_MANAGEMENT_PORT": str(8085 + shift),
        "KAFKA_CONNECT_URL": f"http://127.0.0.1:{8083 + shift}",
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{8333 + shift}",
        "QP_SEAWEEDFS_PORT_OFFSET": str(shift),
        "PUSHGATEWAY_URL": f"127.0.0.1:{9091 + shift}",
        "PROMETHEUS_URL": f"http://127.0.0.1:{9090 + shift}",
        "SPARK_CONNECT_URL": f"sc://127.0.0.1:{15002 + shift}",
    }


def _timed_up(order: list[str]) -> dict[str, float]:
    from qp_assets.stack import ensure_up

    seconds: dict[str, float] = {}
    for name in order:
        t0 = time.perf_counter()
        ensure_up([name])
        seconds[name] = time.perf_counter() - t0
    return seconds


def _rss_mb() -> dict[str, float]:
    from qp_assets.stack import status

    return {row.name: row.rss_bytes / 2**20 for row in status()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-runs", type=int, default=1, help="warm restarts to average (default 1)")
    parser.add_argument("--port-shift", type=int, default=20000, help="added to every default port")
    parser.add_argument("--keep-dir", action="store_true", help="keep the temporary runtime dir")
    args = parser.parse_args()
    if args.warm_runs < 1:
        parser.error(f"--warm-runs must be >= 1, got {args.warm_runs}")

    shared_lib = Path(os.environ.get("QP_HOME", ROOT / ".qp")).resolve() / "lib"
    home = Path(tempfile.mkdtemp(prefix="qp-stack-bench-"))
    os.environ.update(_isolated_env(home, args.port_shift))

    from qp_assets.stack import SERVICE_ORDER, down, fetch

    if shared_lib.is_dir():
        (home / "lib").symlink_to(shared_lib, target_is_directory=True)
    print(f"runtime dir {home} (lib -> {shared_lib}); ports shifted by +{args.port_shift}")
    fetch()  # make sure every jar is cached before timing (no-op when they are)

    rows: list[tuple[str, dict[str, float]]] = []
    try:
        cold = _timed_up(SERVICE_ORDER)
        rss_cold = _rss_mb()
        rows.append(("cold", cold))
        down()
        warm_runs = []
        rss_warm: dict[str, float] = {}
        for _ in range(args.warm_runs):
            warm_runs.append(_timed_up(SERVICE_ORDER))
            rss_warm = _rss_mb()
            down()
        warm = {n: sum(r[n] for r in warm_runs) / len(warm_runs) for n in SERVICE_ORDER}
        rows.append((f"warm (mean of {args.warm_runs})", warm))
    finally:
        down()
        if not args.keep_dir:
            shutil.rmtree(home, ignore_errors=True)

    width = max(len(n) for n in SERVICE_ORDER) + 2
    print()
    print(f"{'service':<{width}} {'cold s':>8} {'warm s':>8} {'RSS cold MB':>12} {'RSS warm MB':>12}")
    for name in SERVICE_ORDER:
        print(
            f"{name:<{width}} {cold[name]:>8.1f} {warm[name]:>8.1f} {rss_cold.get(name, 0):>12.0f} "
            f"{rss_warm.get(name, 0):>12.0f}"
        )
    total_cold, total_warm = sum(cold.values()), sum(warm.values())
    rss_total = max(sum(rss_cold.values()), sum(rss_warm.values()))
    print(
        f"{'total':<{width}} {total_cold:>8.1f} {total_warm:>8.1f} {sum(rss_cold.values()):>12.0f} "
        f"{sum(rss_warm.values()):>12.0f}"
    )
    print()
    print(f"cold/warm ratio: {total_cold / total_warm:.2f}x")
    print(
        f"targets: warm {total_warm:.1f} s < 60 s: {'OK' if total_warm < 60 else 'MISSED'}; "
        f"RSS {rss_total / 1024:.2f} GB < 4 GB: {'OK' if rss_total < 4096 else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
