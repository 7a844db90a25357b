"""Streaming benchmark: publish throughput vs a bare producer, and publish-to-landed latency.

1. Throughput: N LiH-sized VQE results (300 iterations, 8 parameters, 276 Pauli terms) published with
   ``publish_record`` (Avro serialization against the registry + idempotent, acks=all producer, each result
   waits for its acknowledgement, as ``qp vqe run --publish`` does) versus a bare confluent-kafka producer
   sending the same pre-serialized bytes with the same settings, (a) also acknowledged one by one and
   (b) pipelined. Ratios: ours / bare. The shared producer is warmed up first and the two acked modes run
   alternately in two halves.
2. Latency: M results published one per ``--interval`` seconds through a benchmark-only sink connector with the
   production rotation settings (flush.size, rotate.interval.ms); latency = first time the result is listed
   in S3 minus the time it was acknowledged by Kafka. Prints p50/p99.

Needs the local stack (``qp stack up``). Run: ``python benchmarks/streaming.py [--n 200] [--m 30]``.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
import uuid
from datetime import UTC, datetime

import boto3
import fastavro
import httpx
from botocore.config import Config
from confluent_kafka import Producer

from qp_assets.features.golden import make_result
from qp_assets.stack import ensure_up
from qp_assets.streaming.connect import connector_config, wait_running
from qp_assets.streaming.publisher import (
    _json_default,
    ensure_topic,
    produce_acked,
    producer_config,
    publish_record,
    serializer,
)


def lih_sized(i: int, tag: str) -> dict:
    """A LiH-sized result in the form ``VQEResult.to_record()`` publishes (timestamps as epoch ms)."""
    rec = make_result(i, datetime.now(UTC), num_iterations=300, num_parameters=8, num_terms=276,
                      run_id=f"bench-{tag}-{i:05d}")  # fmt: skip
    return json.loads(json.dumps(rec, default=_json_default))


def throughput(settings, n: int, tag: str) -> list[tuple[str, float, float]]:
    topic = f"qp_bench_stream_{tag}"
    ensure_topic(settings, topic, 1)
    records = [lih_sized(i, tag) for i in range(n)]
    ser = serializer(settings, topic, "vqe_result", 3)
    payloads = [ser(r) for r in records]
    mb = sum(len(p) for p in payloads) / 1e6
    # Warm-up outside the timings: the first publish creates the shared producer and waits for its
    # idempotent producer id; both acked modes then use that same warm producer.
    warm = lih_sized(n, tag)
    publish_record(warm, settings, topic=topic, key=warm["run_id"], schema_name="vqe_result", version=3)
    ours = bare_acked = 0.0
    for part in (slice(0, n // 2), slice(n // 2, n)):  # alternate, so drift hits both modes alike
        t = time.perf_counter()
        for r in records[part]:
            publish_record(r, settings, topic=topic, key=r["run_id"], schema_name="vqe_result", version=3)
        ours += time.perf_counter() - t
        t = time.perf_counter()
        for r, p in zip(records[part], payloads[part], strict=True):
            produce_acked(settings, topic, r["run_id"], p)
        bare_acked += time.perf_counter() - t
    rows = [
        ("ours: serialize + publish, acked per result", ours, mb),
        ("bare producer, same bytes, acked per result", bare_acked, mb),
    ]
    bare = Producer(producer_config(settings))
    t = time.perf_counter()
    for r, p in zip(records, payloads, strict=True):
        bare.produce(topic, key=r["run_id"].encode(), value=p)
        bare.poll(0)
    bare.flush(60)
    rows.append(("bare producer, same bytes, pipelined", time.perf_counter() - t, mb))
    t = time.perf_counter()
    for r in records:
        ser(r)
    rows.append(("(serialization alone)", time.perf_counter() - t, mb))
    return rows


def landing_latency(settings, m: int, interval: float, tag: str) -> list[float]:
    topic = f"qp_bench_land_{tag}.cfg"
    prefix = f"bench/landing-{tag}"
    ensure_topic(settings, topic, 1)
    name = f"qp-bench-sink-{tag}"
    config = connector_config(settings)
    config.update({"topics.regex": rf"qp_bench_land_{tag}\.cfg", "s3.prefix": prefix})
    url = f"{settings.kafka_connect_url}/connectors/{name}"
    httpx.put(f"{url}/config", json=config, timeout=90).raise_for_status()
    wait_running(settings, name, 90)
    s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, aws_access_key_id=settings.aws_access_key_id,
                      aws_secret_access_key=settings.aws_secret_access_key, region_name=settings.aws_region,
                      config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3}))  # fmt: skip
    acked: dict[str, float] = {}
    seen: dict[str, float] = {}
    seen_keys: set[str] = set()

    def scan() -> None:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if obj["Key"] in seen_keys:
                    continue
                seen_keys.add(obj["Key"])
                body = s3.get_object(Bucket=settings.bucket, Key=obj["Key"])["Body"].read()
                now = time.time()
                for rec in fastavro.reader(io.BytesIO(body)):
                    seen.setdefault(rec["run_id"], now)

    try:
        for i in range(m):
            rec = lih_sized(10_000 + i, tag)
            publish_record(rec, settings, topic=topic, key=rec["run_id"], schema_name="vqe_result", version=3)
            acked[rec["run_id"]] = time.time()
            end = time.monotonic() + interval
            while time.monotonic() < end:
                scan()
                time.sleep(0.25)
        deadline = time.monotonic() + 90
        while len(seen) < m and time.monotonic() < deadline:
            scan()
            time.sleep(0.25)
    finally:
        httpx.delete(url, timeout=30)
    return [seen[k] - acked[k] for k in acked if k in seen]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200, help="results for the throughput comparison")
    parser.add_argument("--m", type=int, default=30, help="results for the landing latency")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between latency probes")
    args = parser.parse_args()
    settings = ensure_up()
    tag = uuid.uuid4().hex[:8]
    rows = throughput(settings, args.n, tag)
    print(f"\nPublish throughput, {args.n} LiH-sized results ({rows[0][2] / args.n * 1000:.1f} kB each):")
    print(f"{'mode':48s} {'seconds':>8s} {'results/s':>10s} {'MB/s':>8s}")
    for name, secs, mb in rows:
        print(f"{name:48s} {secs:8.2f} {args.n / secs:10.1f} {mb / secs:8.2f}")
    print(f"ratio ours / bare (acked per result): {rows[0][1] / rows[1][1]:.2f}x  (target <= 2x)")
    print(f"ratio ours / bare (pipelined):        {rows[0][1] / rows[2][1]:.2f}x")
    lat = sorted(landing_latency(settings, args.m, args.interval, tag))
    cfg = connector_config(settings)
    print(f"\nPublish-to-landed latency, {len(lat)}/{args.m} results, flush.size={cfg['flush.size']}, "
          f"rotate.interval.ms={cfg['rotate.interval.ms']}:")  # fmt: skip
    if lat:
        p99 = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
        print(f"p50 {statistics.median(lat):.2f} s   p99 {p99:.2f} s   max {lat[-1]:.2f} s")


if __name__ == "__main__":
    main()
