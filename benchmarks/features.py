"""Benchmark: feature-table build throughput, and the cost of re-running one day vs rebuilding all days.

Generates N synthetic landed VQE runs (v3 contract, fastavro, landing layout) spread over D days on the
stack's S3 (or a local folder with --local), then measures in ONE Spark session:

1. full build of all D days (build_days, one Spark job per table): rows written per second;
2. a new file lands for day 1; re-run day 1 only (build_day);
3. rebuild all D days from scratch (build_days) for comparison.

The ratio (2) / (3) shows that re-running a day costs what that day costs, not what the history costs.

    .venv/bin/python benchmarks/features.py [--runs 240] [--days 4] [--iterations 100] [--parameters 24]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tqdm import tqdm

from qp_assets.features import golden
from qp_assets.features.build import build_day, build_days
from qp_assets.features.catalog import private_catalog
from qp_assets.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=240, help="landed VQE runs in total (default 240)")
    parser.add_argument("--days", type=int, default=4, help="days the runs are spread over (default 4)")
    parser.add_argument(
        "--iterations", type=int, default=100, help="optimizer iterations per run (default 100)"
    )
    parser.add_argument("--parameters", type=int, default=24, help="ansatz parameters per run (default 24)")
    parser.add_argument("--runs-per-file", type=int, default=20, help="records per landed file (default 20)")
    parser.add_argument(
        "--local", action="store_true", help="local folder + file warehouse instead of the stack's S3"
    )
    args = parser.parse_args(argv)
    if min(args.runs, args.days, args.iterations, args.parameters, args.runs_per_file) <= 0:
        print("error: all sizes must be positive", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)

    tmp = Path(tempfile.mkdtemp(prefix="qp-bench-features-"))
    base = Settings.from_env()
    prefix = f"benchmarks/features-{uuid.uuid4().hex[:8]}/"
    if args.local:
        settings = dataclasses.replace(
            base,
            iceberg_catalog_uri=f"sqlite:///{tmp / 'catalog.db'}",
            iceberg_warehouse=f"file://{tmp / 'warehouse'}",
        )
        sink = golden.LandingSink(local_root=tmp / "landing")
        client = None
    else:
        from qp_assets.s3 import s3_client
        from qp_assets.stack import ensure_up

        for attempt in range(3):  # the shared stack may be restarting briefly
            try:
                base = ensure_up(["seaweedfs"])
                break
            except Exception:
                if attempt == 2:
                    raise
                time.sleep(10)
        settings = private_catalog(base, "qp_bench", tmp / "catalog.db", prefix)
        client = s3_client(settings)
        sink = golden.LandingSink(s3_client=client, bucket=settings.bucket, prefix=prefix)

    start_day = datetime(2026, 3, 1, tzinfo=UTC)
    days = [(start_day + timedelta(days=d)).date() for d in range(args.days)]
    t0 = time.monotonic()
    offset = 0
    per_day = [args.runs // args.days + (1 if d < args.runs % args.days else 0) for d in range(args.days)]
    with tqdm(total=args.runs, desc="landing runs", unit="run") as bar:
        run_index = 0
        for d, n in enumerate(per_day):
            for first in range(0, n, args.runs_per_file):
                batch = []
                for k in range(first, min(n, first + args.runs_per_file)):
                    when = start_day + timedelta(days=d, hours=1 + (k % 20), seconds=k)
                    batch.append(
                        golden.make_result(
                            run_index, when, num_iterations=args.iterations, num_parameters=args.parameters
                        )
                    )
                    run_index += 1
                golden.write_landed_file(sink, batch, offset=offset, when=batch[0]["event_time"])
                offset += len(batch)
                bar.update(len(batch))
    landing_s = time.monotonic() - t0

    from qp_assets.features.spark import get_spark_session

    t0 = time.monotonic()
    spark = get_spark_session(settings)
    session_s = time.monotonic() - t0
    try:
        t0 = time.monotonic()
        full = build_days(days, spark, settings, run_id="bench-full", raw_root=sink.raw_root)
        full_s = time.monotonic() - t0
        full_rows = sum(n for r in full for t, n in r.row_counts.items() if t != "processing_metadata")

        late = [
            golden.make_result(
                10_000 + k,
                start_day + timedelta(hours=22, seconds=k),
                num_iterations=args.iterations,
                num_parameters=args.parameters,
            )
            for k in range(min(args.runs_per_file, per_day[0]))
        ]
        golden.write_landed_file(sink, late, partition=1, offset=0, when=late[0]["event_time"])
        t0 = time.monotonic()
        one = build_day(days[0], spark, settings, run_id="bench-one-day", raw_root=sink.raw_root)
        one_s = time.monotonic() - t0
        one_rows = sum(n for t, n in one.row_counts.items() if t != "processing_metadata")

        t0 = time.monotonic()
        again = build_days(days, spark, settings, run_id="bench-rebuild", raw_root=sink.raw_root)
        again_s = time.monotonic() - t0
        again_rows = sum(n for r in again for t, n in r.row_counts.items() if t != "processing_metadata")
    finally:
        spark.stop()
        if client is not None:
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=settings.bucket, Prefix=prefix
            ):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=settings.bucket, Delete={"Objects": keys})
        shutil.rmtree(tmp, ignore_errors=True)

    storage = "local folder + file warehouse" if args.local else f"SeaweedFS S3 {settings.s3_endpoint_url}"
    print()
    print(
        f"feature build benchmark: {args.runs} runs x {args.iterations} iterations x {args.parameters} parameters, "
        f"{args.days} days, {storage}, master {settings.spark_master}"
    )
    print(
        f"landing {args.runs} runs with fastavro: {landing_s:.1f} s; Spark session start: {session_s:.1f} s"
    )
    print()
    header = f"{'step':42s} {'days':>5s} {'rows written':>13s} {'seconds':>8s} {'rows/s':>10s}"
    print(header)
    print("-" * len(header))
    for name, n_days, rows, secs in (
        ("full build, all days (build_days)", len(days), full_rows, full_s),
        (f"re-run day 1 with one new file (+{len(late)} runs)", 1, one_rows, one_s),
        ("rebuild all days (build_days)", len(days), again_rows, again_s),
    ):
        print(f"{name:42s} {n_days:>5d} {rows:>13,d} {secs:>8.1f} {rows / secs:>10,.0f}")
    print()
    print(
        f"ratio rebuild-all / re-run-one-day: {again_s / one_s:.2f}x  (history: {len(days)} days; cost follows the touched day)"
    )
    print(f"day 1 rows after re-run: {one.row_counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
