"""What starts the feature runs, measured under a real ``dagster-daemon``: landing -> feature run created,
and feature runs per day, for ``QP_FEATURE_TRIGGER=sensor`` (the landing sensor requests the runs) or
``automation`` (the landing sensor observes, ``feature_automation_sensor`` requests them).

A fresh, isolated stack and instance (``daemon_stack.fresh_daemon_stack``). ``--landings`` one-record files
land in today's partition one at a time, each once the previous one's runs have finished and the day has
been quiet for ``--quiet`` seconds: per landing, the seconds from the object's upload to the creation of
the run it started. Then ``--burst`` files land ``--gap`` seconds apart: how many runs the burst cost, and
whether the day's latest build covers every file (its ``landing_signature`` is the day's final one).

    .venv/bin/python benchmarks/landing_trigger.py --trigger automation [--landings 6 --burst 4 --gap 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime

from daemon_stack import fresh_daemon_stack


def _runs(instance, day: str) -> list:
    from dagster import RunsFilter

    records = instance.get_run_records(RunsFilter(tags={"qp/kind": "features", "dagster/partition": day}))
    return sorted(records, key=lambda r: r.create_timestamp)


def _until(predicate, timeout_s: float, what: str, daemon):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError("dagster-daemon exited")
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(what)


def _quiet(instance, day: str, quiet_s: float):
    """The day's runs when all have finished and none ended in the last ``quiet_s`` seconds, else None."""
    runs = _runs(instance, day)
    if not all(r.dagster_run.is_finished for r in runs):
        return None
    return runs if time.time() - max((r.end_time or 0 for r in runs), default=0) > quiet_s else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trigger", choices=("sensor", "automation"), required=True)
    parser.add_argument("--landings", type=int, default=6, help="single landings, one at a time")
    parser.add_argument("--burst", type=int, default=4, help="files of the burst")
    parser.add_argument("--gap", type=float, default=2.0, help="seconds between the burst's files")
    parser.add_argument("--quiet", type=float, default=12.0, help="quiet seconds after a day's runs")
    parser.add_argument("--port-offset", type=int, default=None, help="default: the first free one")
    args = parser.parse_args(argv)

    with fresh_daemon_stack(args.port_offset, env={"QP_FEATURE_TRIGGER": args.trigger}) as env:
        from qp_assets.assets.features import latest_builds
        from qp_assets.features.golden import LandingSink, make_result, write_landed_file
        from qp_assets.s3 import s3_client
        from qp_assets.sensors.landing import landed_per_day

        client = s3_client(env.settings)
        sink = LandingSink(s3_client=client, bucket=env.settings.bucket)
        today = datetime.now(UTC).date()
        day, tag = today.isoformat(), uuid.uuid4().hex[:8]
        counter = iter(range(10_000))

        def land() -> float:
            i = next(counter)
            record = {
                **make_result(i, datetime.now(UTC), run_id=f"lt-{tag}-{i}"),
                "request_id": f"lt-{tag}-{i}",
            }
            write_landed_file(sink, [record], offset=i)
            return time.time()

        latencies = []
        for n in range(args.landings):
            before = len(_runs(env.instance, day))
            landed_at = land()
            created = _until(
                lambda before=before: _runs(env.instance, day)[before:],
                60,
                "a run for the landing",
                env.daemon,
            )
            latencies.append(created[0].create_timestamp.timestamp() - landed_at)
            runs = _until(lambda: _quiet(env.instance, day, args.quiet), 300, "the runs finished", env.daemon)
            print(
                f"  landing {n}: run created after {latencies[-1]:.2f} s; runs of the day {len(runs)}",
                flush=True,
            )
        single_runs = len(_runs(env.instance, day))

        for _ in range(args.burst):
            land()
            time.sleep(args.gap)
        runs = _until(
            lambda: _quiet(env.instance, day, args.quiet), 400, "the burst's runs finished", env.daemon
        )
        final = landed_per_day(client, env.settings.bucket, "raw/topics/", [today])[today].signature()
        covered = latest_builds(env.instance, [day]).get(day, (None, None))[1]
        for r in runs:  # the timeline, to explain any extra run
            print(f"  run {r.dagster_run.run_id[:8]} created {r.create_timestamp:%H:%M:%S.%f} started "
                  f"{datetime.fromtimestamp(r.start_time or 0, UTC):%H:%M:%S.%f} ended "
                  f"{datetime.fromtimestamp(r.end_time or 0, UTC):%H:%M:%S.%f} {r.dagster_run.status.value}")  # fmt: skip

    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(f"\nQP_FEATURE_TRIGGER={args.trigger}")
    print(f"landing -> feature run created, {len(latencies)} single landings: p50 {statistics.median(latencies):.2f} s, "
          f"p95 {p95:.2f} s, each {[round(x, 2) for x in latencies]}")  # fmt: skip
    print(f"runs for the {args.landings} single landings: {single_runs}; for the burst of {args.burst} files "
          f"{args.gap:.0f} s apart: {len(runs) - single_runs}; latest build covers every file: {covered == final}")  # fmt: skip
    return 0 if covered == final and single_runs == args.landings else 1


if __name__ == "__main__":
    sys.exit(main())
