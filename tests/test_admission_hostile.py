"""A hostile request corpus through the real request path on the local stack (Kafka, Apicurio, Dagster job).

Schema-valid but absurd requests (Avro written with the registered request schema, bypassing
``qp request submit``'s checks, as a foreign producer could) and undecodable ones are mixed with good H2
requests on a fresh topic; one ``vqe_runner_job`` run (in process, the sensor's run config) reads the whole
offset range. Every bad request must end in ``vqe.requests.dlq`` exactly once with a reason and its true
origin (topic, partition, offset), every good one as a published result, and the run must succeed. The table
of cases and outcomes is printed (``pytest -s``). A clean run of good requests alone gives the latency baseline.
"""

from __future__ import annotations

import math
import statistics
import struct
import time
import uuid

import pytest
from confluent_kafka import Producer

from qp_assets.settings import Settings
from qp_assets.streaming.kafka_config import client_config

pytestmark = [pytest.mark.services, pytest.mark.slow]

H2 = {"name": "H2", "symbols": ["H", "H"], "coords": [[0.0, 0.0, 0.0], [0.0, 0.0, 0.7414]], "charge": 0,
      "multiplicity": 1, "units": "angstrom", "masses": None}  # fmt: skip
BENZENE = {
    "name": "benzene", "symbols": ["C"] * 6 + ["H"] * 6, "charge": 0, "multiplicity": 1, "units": "angstrom",
    "masses": None,
    "coords": [[0.0, 1.397, 0.0], [1.2098, 0.6985, 0.0], [1.2098, -0.6985, 0.0], [0.0, -1.397, 0.0],
               [-1.2098, -0.6985, 0.0], [-1.2098, 0.6985, 0.0], [0.0, 2.481, 0.0], [2.1486, 1.2405, 0.0],
               [2.1486, -1.2405, 0.0], [0.0, -2.481, 0.0], [-2.1486, -1.2405, 0.0], [-2.1486, 1.2405, 0.0]],
}  # fmt: skip
CO2 = {"name": "CO2", "symbols": ["C", "O", "O"], "coords": [[0, 0, 0], [0, 0, 1.16], [0, 0, -1.16]],
       "charge": 0, "multiplicity": 1, "units": "angstrom", "masses": None}  # fmt: skip
N_GOOD = 20
#: good requests with a documented twist: GPU asked on a host without one runs on CPU (recorded fallback)
FALLBACK = ("device GPU, no GPU here: CPU fallback", {"device": "GPU", "seed": 99})


def _mol(**kw) -> dict:
    return {**H2, **kw}


def _chain(n: int) -> dict:
    return {**H2, "name": f"H{n}", "symbols": ["H"] * n, "coords": [[0.0, 0.0, 0.74 * i] for i in range(n)]}


#: (case, molecule, config overrides) - schema-valid Avro, refused by admission / validation / the engine
ABSURD: list[tuple[str, dict, dict]] = [
    ("benzene sto3g (72 qubits)", BENZENE, {}),
    ("benzene 6-31g (132 qubits)", BENZENE, {"basis": "6-31g"}),
    ("CO2 sto3g (30 qubits)", CO2, {}),
    ("10^4 atoms", _chain(10_000), {}),
    ("200 atoms", _chain(200), {}),
    ("max_iterations 10^6", H2, {"max_iterations": 10**6}),
    ("shots 10^12", H2, {"shots": 10**12}),
    ("reps 10^4", H2, {"reps": 10**4}),
    ("max_evaluations 10^9", H2, {"max_evaluations": 10**9}),
    ("NaN coordinate", _mol(coords=[[0.0, 0.0, 0.0], [0.0, 0.0, math.nan]]), {}),
    ("+inf coordinate", _mol(coords=[[0.0, 0.0, 0.0], [math.inf, 0.0, 0.7]]), {}),
    ("-inf coordinate", _mol(coords=[[-math.inf, 0.0, 0.0], [0.0, 0.0, 0.7]]), {}),
    ("duplicate atoms", _mol(coords=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), {}),
    ("atoms 0.01 A apart", _mol(coords=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.01]]), {}),
    ("unknown element Xx", _mol(symbols=["H", "Xx"]), {}),
    ("no atoms", _mol(symbols=[], coords=[]), {}),
    ("3 coords for 2 atoms", _mol(coords=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.7], [0.0, 0.0, 1.4]]), {}),
    ("coordinate row of 2", _mol(coords=[[0.0, 0.0], [0.0, 0.0, 0.7]]), {}),
    ("units furlong", _mol(units="furlong"), {}),
    ("H2 multiplicity 2", _mol(multiplicity=2), {}),
    ("H2 charge +2 (0 electrons)", _mol(charge=2), {}),
    ("multiplicity 0", _mol(multiplicity=0), {}),
    ("negative mass", _mol(masses=[1.0, -1.0]), {}),
    (
        "10 uranium atoms (920 electrons)",
        {**_chain(10), "symbols": ["U"] * 10, "coords": [[0.0, 0.0, 3.0 * i] for i in range(10)]},
        {},
    ),
    ("unknown basis", H2, {"basis": "no-such-basis"}),
    ("empty basis", H2, {"basis": ""}),
    ("unknown ansatz", H2, {"ansatz": "qaoa"}),
    ("unknown mapper", H2, {"mapper": "qwerty"}),
    ("unknown optimizer", H2, {"optimizer": "ADAM9000"}),
    ("unknown initial state", H2, {"initial_state": "haar"}),
    ("unknown backend method", H2, {"backend_method": "tensor_network"}),
    ("unknown device", H2, {"device": "TPU"}),
    ("active space (1,1): engine refuses", H2, {"active_electrons": 1, "active_orbitals": 1}),
    ("reps 0", H2, {"reps": 0}),
    ("shots 0", H2, {"shots": 0}),
    ("negative seed", H2, {"seed": -5}),
    ("max_iterations -1", H2, {"max_iterations": -1}),
    ("active electrons without orbitals", H2, {"active_electrons": 2}),
    ("active space larger than molecule", H2, {"active_electrons": 10, "active_orbitals": 2}),
    ("zeros initial state with uccsd", H2, {"initial_state": "zeros"}),
    ("optimizer_options not JSON", H2, {"optimizer_options": "{not json"}),
    ("optimizer_options a list", H2, {"optimizer_options": "[1, 2]"}),
    ("charge -1000 (1002 electrons)", _mol(charge=-1000), {}),
    ("multiplicity 1000", _mol(multiplicity=1000), {}),
    ("benzene cc-pv5z", BENZENE, {"basis": "cc-pv5z"}),
    ("active space 10^6 orbitals", H2, {"active_electrons": 2, "active_orbitals": 10**6}),
]


def _undecodable(good: bytes) -> list[tuple[str, bytes | None]]:
    return [
        ("bad magic byte", b"\x07" + good[1:]),
        ("unknown schema id", b"\x00" + struct.pack(">I", 987_654) + good[5:]),
        ("truncated Avro", good[: len(good) // 2]),
        ("empty value", b""),
        ("tombstone (None)", None),
        ("magic byte only", b"\x00\x00"),
        ("plain JSON", b'{"request_id": "json", "molecule": {}}'),
        ("large garbage payload (9 MB)", good[:5] + b"\xff" * (9 * 1024 * 1024)),
    ]


def _request(rid: str, molecule: dict, overrides: dict) -> dict:
    record = {
        "request_id": rid, "molecule": molecule, "basis": "sto3g", "mapper": "jordan_wigner", "freeze_core": False,
        "active_electrons": None, "active_orbitals": None, "ansatz": "uccsd", "reps": 1,
        "initial_state": "hartree_fock", "optimizer": "L-BFGS-B", "optimizer_options": "{}",
        "backend_method": "statevector", "device": "CPU", "shots": None, "seed": None, "max_iterations": 100,
        "max_evaluations": None, "submitted_at": int(time.time() * 1000),
    }  # fmt: skip
    record.update(overrides)
    return record


def _produce(settings: Settings, topic: str, messages: list[tuple[bytes | None, bytes | None]]) -> list[int]:
    from qp_assets.streaming.publisher import ensure_topic

    ensure_topic(settings, topic, 1)
    producer = Producer(client_config(settings.kafka_bootstrap_servers, **{"enable.idempotence": True, "message.max.bytes": 10 * 1024 * 1024}))  # fmt: skip
    offsets: dict[int, int] = {}
    for i, (key, value) in enumerate(messages):
        producer.produce(topic, key=key, value=value,
                         on_delivery=lambda err, msg, i=i: offsets.__setitem__(i, -1 if err else msg.offset()))  # fmt: skip
    assert producer.flush(60) == 0
    return [offsets[i] for i in range(len(messages))]


def _run_range(settings: Settings, topic: str, start: int, end: int):
    from dagster import DagsterInstance, in_process_executor

    from qp_assets.assets.vqe_runner import build_vqe_runner_job
    from qp_assets.resources.core import KafkaResource, PushGatewayResource, SchemaRegistryResource

    job = build_vqe_runner_job(in_process_executor)
    instance = DagsterInstance.ephemeral()
    t0 = time.perf_counter()
    result = job.execute_in_process(
        run_config={"ops": {"load_request_batch": {"config": {"topic": topic, "partition": 0,
                                                               "start_offset": start, "end_offset": end}}}},
        resources={"kafka": KafkaResource(bootstrap_servers=settings.kafka_bootstrap_servers),
                   "pushgateway": PushGatewayResource(url=settings.pushgateway_url),
                   "schema_registry": SchemaRegistryResource(url=settings.schema_registry_url)},
        instance=instance, tags={"qp/request_topic": topic},
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    steps = {e.step_key for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"}
    produced = any(k.startswith("run_vqe_request") for k in steps)  # none when every request was refused
    values = result.output_for_node("run_vqe_request").values() if produced else []
    outputs = {value["request_id"]: value for value in values}
    durations = {  # step key -> seconds of each run_vqe_request step
        stat.step_key: stat.end_time - stat.start_time
        for stat in instance.get_run_step_stats(result.run_id)
        if stat.step_key.startswith("run_vqe_request") and stat.end_time and stat.start_time
    }
    return result, outputs, elapsed, durations


def _good_durations(durations: dict[str, float], ids: list[str]) -> list[float]:
    return [d for key, d in durations.items() if any(r.replace("-", "_") in key for r in ids)]


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def test_hostile_corpus_every_bad_request_dead_lettered_once_every_good_one_processed(
    stack: Settings,
) -> None:
    from qp_assets.streaming.dlq import read_entries
    from qp_assets.streaming.publisher import serializer
    from qp_assets.streaming.schemas import REQUEST_SCHEMA, latest_version

    tag = uuid.uuid4().hex[:8]
    topic = f"qp_test_hostile_{tag}"
    ser = serializer(stack, topic, REQUEST_SCHEMA, latest_version(REQUEST_SCHEMA))
    good_bytes = ser(_request("template", H2, {}))

    # latency baseline: good requests alone on their own topic
    clean_topic = f"{topic}_clean"
    clean_ser = serializer(stack, clean_topic, REQUEST_SCHEMA, latest_version(REQUEST_SCHEMA))
    clean_ids = [f"warmup-{tag}"] + [f"clean-{tag}-{i}" for i in range(6)]  # the first one pays the imports
    _produce(
        stack,
        clean_topic,
        [(r.encode(), clean_ser(_request(r, H2, {"seed": i}))) for i, r in enumerate(clean_ids)],
    )
    clean, clean_out, clean_s, clean_d = _run_range(stack, clean_topic, 0, len(clean_ids))
    assert clean.success and {o["status"] for o in clean_out.values()} == {"published"}

    cases: list[tuple[str, str, bytes | None, bytes | None]] = []  # (kind, case, key, value)
    good_ids = []
    absurd = list(ABSURD)
    undecodable = _undecodable(good_bytes)
    for i in range(max(len(absurd), len(undecodable), N_GOOD)):  # interleaved: good ones between bad ones
        if i < N_GOOD:
            rid = f"good-{tag}-{i}"
            good_ids.append(rid)
            cases.append(("good", f"H2 seed {i}", rid.encode(), ser(_request(rid, H2, {"seed": i}))))
        if i < len(absurd):
            name, molecule, overrides = absurd[i]
            rid = f"bad-{tag}-{i}"
            cases.append(("absurd", name, rid.encode(), ser(_request(rid, molecule, overrides))))
        if i < len(undecodable):
            name, value = undecodable[i]
            cases.append(("undecodable", name, f"undecodable-{tag}-{i}".encode(), value))
    rid = f"good-{tag}-gpu"
    good_ids.append(rid)
    cases.append(("good", FALLBACK[0], rid.encode(), ser(_request(rid, H2, FALLBACK[1]))))
    t_submit = time.perf_counter()
    offsets = _produce(stack, topic, [(k, v) for _kind, _case, k, v in cases])
    assert offsets == list(range(len(cases)))
    run, outputs, run_s, run_d = _run_range(stack, topic, 0, len(cases))
    assert run.success, "the run must not fail on bad requests"
    dlq_deadline = time.monotonic() + 60
    entries = []
    while time.monotonic() < dlq_deadline:
        entries = [e for e in read_entries(stack, timeout_s=30) if e.origin[0] == topic]
        if len(entries) >= len(cases) - len(good_ids):
            break
        time.sleep(1)
    total_s = time.perf_counter() - t_submit
    by_offset: dict[int, list] = {}
    for e in entries:
        by_offset.setdefault(e.origin[2], []).append(e)

    rows, problems = [], []
    for offset, (kind, case, key, _value) in enumerate(cases):
        dead = by_offset.get(offset, [])
        out = outputs.get(key.decode())
        if kind == "good":
            ok = out is not None and out["status"] == "published" and not dead
            outcome = (
                f"published E={out['total_energy']:.6f}" if out and out.get("total_energy") else str(out)
            )
        else:
            ok = (
                len(dead) == 1
                and bool(dead[0].reason)
                and dead[0].origin[1] == 0
                and (out is None or out["status"] == "rejected")
            )
            outcome = (
                f"DLQ x{len(dead)} [{dead[0].stage}] {' '.join(dead[0].reason.split())[:110]}"
                if dead
                else "NOT IN DLQ"
            )
        if ok and case == "large garbage payload (9 MB)":  # its head, size and digest, not 9 MB twice
            entry = dead[0].to_dict()
            ok = (
                entry["value_truncated"]
                and entry["value_bytes"] == len(_value)
                and len(dead[0].value) == 1024 * 1024
            )
        rows.append((offset, kind, case, "ok" if ok else "FAIL", outcome))
        if not ok:
            problems.append((offset, case, outcome))

    print(f"\nhostile corpus on {topic}: {len(cases)} cases ({len(good_ids)} good, {len(absurd)} schema-valid absurd, "
          f"{len(undecodable)} undecodable)")  # fmt: skip
    print(f"{'off':>3}  {'kind':11}  {'case':36}  {'':4}  outcome")
    for offset, kind, case, verdict, outcome in rows:
        print(f"{offset:>3}  {kind:11}  {case:36}  {verdict:4}  {outcome}")
    clean_good, corpus_good = _good_durations(clean_d, clean_ids[1:]), _good_durations(run_d, good_ids)
    print(f"clean run: {len(clean_ids)} good requests (first one a warm-up) in {clean_s:.1f} s; corpus run: {len(cases)} requests in "
          f"{run_s:.1f} s; every bad one in the DLQ {total_s:.1f} s after the corpus was produced")  # fmt: skip
    if clean_good and corpus_good:
        print(f"run_vqe_request step time of good requests: p95 clean {_p95(clean_good):.2f} s, p95 in the corpus "
              f"{_p95(corpus_good):.2f} s (ratio {_p95(corpus_good) / _p95(clean_good):.2f}); "
              f"run-stage refusals' steps median {statistics.median([d for k, d in run_d.items() if 'bad' in k] or [0]):.2f} s")  # fmt: skip
    assert not problems, problems
