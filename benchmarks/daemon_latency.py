"""Request latency under a real ``dagster-daemon``, for new and for existing configurations.

What a user gets with the product's defaults (dagster.yaml, sensor intervals, executor): a fresh, isolated
stack (own ``QP_HOME`` under a temp dir, ports shifted by ``--port-offset``) and a fresh Dagster instance;
the daemon runs the sensors. Two scenarios, ``--requests`` H2 requests each, submitted ``--gap`` seconds
apart with ``qp``'s own publisher:

* new configuration: every request has a configuration (basis x mapper) whose result topic does not exist
  yet, so Kafka Connect has never seen it;
* existing configuration: every request uses the default configuration, whose topic exists by then.

Before both, one request on the default configuration runs until its row is queryable and is reported on its
own (``--no-cold-start`` skips it): the first request of a fresh stack pays every cold start, which would
otherwise be counted in whichever scenario comes first, and it creates the default configuration's topic.

Per request it measures submit -> result acknowledged by Kafka (``kafka_acked_at`` of the ``run_vqe_request``
step, stamped when ``publish_result`` returned; before that metadata existed: the step output, recorded after
the metrics push and the plot), submit -> step output (``step p50``) and submit -> row queryable in Iceberg (``vqe_results`` through
PyIceberg), and prints p50 / p95 of both side by side with their ratio. It then splits each request's
latency into stages (median seconds per scenario), from Dagster's run records and the landed object:

* sensor: submit -> ``vqe_runner_job`` run created by the request sensor;
* launch: run created -> run started (dequeue, run worker process start, definitions import);
* run->ack: run started -> result acknowledged by Kafka (read, admission, VQE, publish);
* ->landed: ack -> the result's file in S3 (its ``LastModified``, 1 s resolution: Connect's rotation);
* ->feature run: landed -> the feature run (``qp/kind=features``: the landing sensor's or declarative
  automation's, ``QP_FEATURE_TRIGGER``) of the day that made the row queryable (the
  last one started before it was) was created (landing sensor; 0 when that run already existed);
* f.launch: that run created (or the landing, if later) -> started (queue behind a running build, launch);
* f.build: that run started (or the landing, if later) -> row queryable (Spark + Iceberg commit + 1 s poll).

With ``--compare-launch`` the daemon is then restarted with the run launcher's fork server off
(``dagster.yaml``: ``run_launcher.config.fork_server: false``) and the existing-configuration scenario runs
again ("existing, cold spawn"): every run worker a cold ``spawn`` of the code server, as Dagster's default.

    .venv/bin/python benchmarks/daemon_latency.py [--requests 5 --gap 8 --timeout 420 --compare-launch]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime

from daemon_stack import fresh_daemon_stack, restart_daemon

#: H2 configurations whose result topics differ (basis x mapper); H2 stays <= 8 qubits in all of them.
NEW_CONFIGS = [
    {"basis": basis, "mapper": mapper}
    for basis in ("6-31g", "3-21g", "sto-6g")
    for mapper in ("jordan_wigner", "parity", "bravyi_kitaev")
]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


#: Stage names of the per-request split, in order (see the module doc).
STAGES = ("sensor", "launch", "run->ack", "->landed", "->feature run", "f.launch", "f.build")


def _epoch(value) -> float:
    """A run record timestamp (datetime, naive = UTC, or epoch float) as epoch seconds."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return float(value)


def _acked(instance, request_ids: set[str]) -> dict[str, dict]:
    """request_id -> {ack, run_created, run_started, topic, partition, offset} of its run_vqe_request output.

    ``ack`` is when Kafka acknowledged the publish (``kafka_acked_at``, epoch seconds; the step output's time
    when the metadata is absent), ``step`` when the step output was recorded; run times from the run record.
    """
    from dagster import DagsterEventType, RunsFilter

    out: dict[str, dict] = {}
    for record in instance.get_run_records(RunsFilter(job_name="vqe_runner_job")):
        run = record.dagster_run
        for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_OUTPUT):
            meta = entry.dagster_event.event_specific_data.metadata or {}
            rid = meta.get("request_id")
            if rid is None or rid.value not in request_ids:
                continue
            acked_at = meta.get("kafka_acked_at")
            out[rid.value] = {
                "ack": acked_at.value if acked_at is not None else entry.timestamp,
                "step": entry.timestamp,
                "run_created": _epoch(record.create_timestamp),
                "run_started": record.start_time,
                "topic": meta["result_topic"].value if "result_topic" in meta else None,
                "partition": meta["kafka_partition"].value if "kafka_partition" in meta else -1,
                "offset": meta["kafka_offset"].value if "kafka_offset" in meta else -1,
            }
    return out


def _landed_at(client, bucket: str, raw_prefix: str, topic: str, partition: int, offset: int) -> float | None:
    """LastModified (epoch s) of the landed file holding (topic, partition, offset), None if not landed.

    Keys end in ``<topic>+<partition>+<startOffset:019d>.avro``: the file is the one with the largest start
    offset <= ``offset``.
    """
    best: tuple[int, float] | None = None
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{raw_prefix}{topic}/"):
        for obj in page.get("Contents", []):
            name = obj["Key"].rsplit("/", 1)[-1]
            head, _, start = name.removesuffix(".avro").rpartition("+")
            if head != f"{topic}+{partition}" or not start.isdigit() or int(start) > offset:
                continue
            if best is None or int(start) > best[0]:
                best = (int(start), obj["LastModified"].timestamp())
    return None if best is None else best[1]


def _stages(instance, settings, submitted, acked, queryable) -> dict[str, list[float]]:
    """Per-stage seconds (see STAGES) of every request whose every timestamp is known."""
    from dagster import RunsFilter

    from qp_assets.resources.core import LandingResource
    from qp_assets.s3 import s3_client

    raw_prefix = LandingResource(bucket=settings.bucket).raw_prefix
    client = s3_client(settings)
    today = datetime.now(UTC).date().isoformat()
    features = [
        (_epoch(r.create_timestamp), r.start_time)
        for r in instance.get_run_records(RunsFilter(tags={"qp/kind": "features"}))
        if r.dagster_run.tags.get("dagster/partition") == today
    ]
    out: dict[str, list[float]] = {name: [] for name in STAGES}
    for rid, t_submit in submitted.items():
        a = acked.get(rid)
        if not a or a["run_started"] is None or not a["topic"] or rid not in queryable:
            print(f"  stages: {rid}: no ack/run start/topic ({a})", flush=True)
            continue
        landed = _landed_at(client, settings.bucket, raw_prefix, a["topic"], a["partition"], a["offset"])
        # the feature run that made the row queryable: the last one started before it was seen (a run lists
        # the files late, after its Spark session is up, so it may have started before the file landed)
        before = sorted(f for f in features if f[1] and f[1] <= queryable[rid])
        if landed is None or not before:
            print(f"  stages: {rid}: landed {landed}, feature runs (created, started) {features}", flush=True)
            continue
        f_created, f_started = max(before, key=lambda f: f[1])
        picked = max(f_created, landed)  # created before the landing (queued or running): pickup is 0
        begun = max(f_started, picked)  # started before the landing: its launch does not count
        points = [
            t_submit,
            a["run_created"],
            a["run_started"],
            a["ack"],
            landed,
            picked,
            begun,
            queryable[rid],
        ]
        for name, start, end in zip(STAGES, points[:-1], points[1:], strict=True):
            out[name].append(end - start)
    return out


def _feature_runs_since(instance, since: float) -> int:
    """Feature runs of today's partition created at or after ``since`` (epoch s): how many runs the
    scenario's landings cost (one per landing would be the duplicates issue 18 saw)."""
    from dagster import RunsFilter

    today = datetime.now(UTC).date().isoformat()
    return sum(
        1
        for r in instance.get_run_records(RunsFilter(tags={"qp/kind": "features"}))
        if r.dagster_run.tags.get("dagster/partition") == today and _epoch(r.create_timestamp) >= since
    )


def _scenario(name, configs, settings, instance, gap_s, timeout_s, daemon) -> dict[str, list[float]]:
    from qp_assets import e2e
    from qp_assets.features.catalog import read_rows

    h2 = e2e.molecule_requests(("H2",))[0]["molecule"]
    submitted: dict[str, float] = {}
    for i, cfg in enumerate(configs):
        req = e2e.build_request(h2, {"seed": i, **cfg}, request_id=f"bench-{name[:3]}-{i}-{time.time_ns()}")
        submitted[req["request_id"]] = time.time()
        e2e.submit_requests([req], settings)
        print(f"  {name}: submitted {req['request_id']} {cfg or '(default configuration)'}", flush=True)
        time.sleep(gap_s)
    acked: dict[str, dict] = {}
    landed: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(landed) < len(submitted):
        if daemon.poll() is not None:
            raise RuntimeError(f"{name}: dagster-daemon exited with {daemon.returncode} while waiting")
        acked.update(_acked(instance, set(submitted) - set(acked)))
        try:
            ids = read_rows("vqe_results", day=datetime.now(UTC).date(), settings=settings).column(
                "request_id"
            )
            now = time.time()
            for rid in set(ids.to_pylist()) & (set(submitted) - set(landed)):
                landed[rid] = now
        except Exception:  # the table does not exist before the first feature run
            pass
        time.sleep(1)
    missing = sorted(set(submitted) - set(landed))
    if missing:
        raise TimeoutError(
            f"{name}: {len(missing)} request(s) not in Iceberg after {timeout_s:.0f} s: {missing}"
        )
    acked.update(_acked(instance, set(submitted) - set(acked)))
    return {
        "feature_runs": _feature_runs_since(instance, min(submitted.values())),
        "ack": [acked[r]["ack"] - submitted[r] for r in submitted if r in acked],
        "step": [acked[r]["step"] - submitted[r] for r in submitted if r in acked],
        "iceberg": [landed[r] - submitted[r] for r in submitted],
        "stages": _stages(instance, settings, submitted, acked, landed),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5, help="requests per scenario (<= 9)")
    parser.add_argument("--gap", type=float, default=8.0, help="seconds between submits")
    parser.add_argument("--timeout", type=float, default=420.0, help="seconds to wait per scenario")
    parser.add_argument("--port-offset", type=int, default=None, help="default: the first free one")
    parser.add_argument(
        "--compare-launch", action="store_true",
        help="then restart the daemon with the run launcher's fork server off and run the existing-configuration "
        "scenario again: warm fork vs cold spawn of the run worker, side by side",
    )  # fmt: skip
    parser.add_argument(
        "--no-cold-start", dest="cold_start", action="store_false",
        help="skip the first request on the fresh stack (then the new-configuration scenario pays the cold start)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= len(NEW_CONFIGS):
        print(f"--requests: 1..{len(NEW_CONFIGS)}", file=sys.stderr)
        return 2

    with fresh_daemon_stack(args.port_offset) as env:
        cold = None
        if args.cold_start:
            # one request first, on the default configuration, until its row is queryable: the first request
            # of a fresh stack pays every cold start (instance, code server, run worker caches, the Spark
            # Connect server's first build, the default topic); reported on its own, so that the two
            # scenarios compare new and existing topics on a platform that is up and running
            cold = _scenario("cold", [{"seed": 100}], env.settings, env.instance, 0, args.timeout, env.daemon)
        results = {
            "new configuration": _scenario(
                "new",
                NEW_CONFIGS[: args.requests],
                env.settings,
                env.instance,
                args.gap,
                args.timeout,
                env.daemon,
            ),
            "existing configuration": _scenario(
                "existing",
                [{}] * args.requests,
                env.settings,
                env.instance,
                args.gap,
                args.timeout,
                env.daemon,
            ),
        }
        if args.compare_launch:
            restart_daemon(env, fork_server=False)
            results["existing, cold spawn"] = _scenario(
                "spawn", [{}] * args.requests, env.settings, env.instance, args.gap, args.timeout, env.daemon
            )

    print(f"\n{args.requests} H2 requests per scenario, {args.gap:.0f} s apart, under dagster-daemon")
    print(
        f"{'scenario':<24}{'ack p50':>9}{'ack p95':>9}{'step p50':>10}{'iceberg p50':>13}{'iceberg p95':>13}"
        f"{'ratio':>7}{'feature runs':>14}"
    )
    for name, r in results.items():
        a50, a95, s50, i50, i95 = (
            _pct(r["ack"], 50),
            _pct(r["ack"], 95),
            _pct(r["step"], 50),
            _pct(r["iceberg"], 50),
            _pct(r["iceberg"], 95),
        )
        print(
            f"{name:<24}{a50:>9.1f}{a95:>9.1f}{s50:>10.1f}{i50:>13.1f}{i95:>13.1f}{i50 / a50:>7.1f}"
            f"{r['feature_runs']:>14}"
        )
    if cold is not None:
        print(
            f"first request on the fresh stack (before both, not in them): ack {cold['ack'][0]:.1f} s, "
            f"Iceberg {cold['iceberg'][0]:.1f} s"
        )
    new, old = results["new configuration"], results["existing configuration"]
    ratio = statistics.median(new["iceberg"]) / statistics.median(old["iceberg"])
    print(f"\nratio new / existing configuration, Iceberg p50: {ratio:.2f}")
    if "existing, cold spawn" in results:
        spawn = results["existing, cold spawn"]
        print(
            "ratio cold spawn / warm fork of the run worker (existing configuration), ack p50: "
            f"{statistics.median(spawn['ack']) / statistics.median(old['ack']):.2f}"
        )
    print(
        "(seconds; ack = submit -> result acknowledged by Kafka; step = submit -> run_vqe_request output "
        "(after metrics and plot); iceberg = submit -> row queryable; ratio = iceberg / ack p50; feature runs "
        "= runs of today's partition created during the scenario)"
    )
    print("\nstages, median seconds (n = requests with every timestamp known)")
    print(f"{'scenario':<24}" + "".join(f"{name:>14}" for name in STAGES) + f"{'n':>4}")
    for name, r in results.items():
        stages = r["stages"]
        n = len(stages[STAGES[0]])
        cells = "".join(f"{statistics.median(stages[s]) if n else float('nan'):>14.1f}" for s in STAGES)
        print(f"{name:<24}{cells}{n:>4}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
