"""Result reuse without services: the experiment key (``qp_assets.vqe.reuse``), the reused record, the
runner's index of earlier results (its S3 object, the prefetch, stale entries) and its bounded look-up (``qp_assets.runner.reuse``), the ``force``
request field and the table evolution that adds the reuse columns. The runner's decision (reuse, force,
a failed look-up) is in ``tests/test_runner_units.py``; the real thing in ``tests/test_reuse_services.py``."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from qp_assets.runner import reuse as runner_reuse
from qp_assets.settings import Settings
from qp_assets.vqe import reuse
from qp_assets.vqe.config import VQEConfig
from qp_assets.vqe.molecule import Molecule, molecule_key

H2 = {"name": "H2", "symbols": ["H", "H"], "coords": [[0, 0, 0], [0, 0, 0.7414]]}
VERSIONS = {"python": "3.11.9", "qiskit": "2.2.3", "qp-assets": "0.1.0", "science_epoch": "1"}


def key_of(molecule: dict | None = None, versions: dict | None = None, **config) -> str:
    return reuse.experiment_key(
        molecule_key(Molecule.from_dict(molecule or H2)),
        VQEConfig(**{"seed": 1, **config}),
        VERSIONS if versions is None else versions,
    )


#: One changed value per configuration field that decides the result (each must change the key).
CHANGED = {
    "basis": "6-31g",
    "mapper": "parity",
    "freeze_core": True,
    "active_electrons": 2,
    "ansatz": "efficient_su2",
    "reps": 2,
    "initial_state": "random",
    "optimizer": "COBYLA",
    "optimizer_options": {"ftol": 1e-12},
    "backend_method": "matrix_product_state",
    "shots": 1000,
    "seed": 2,
    "max_iterations": 50,
    "max_evaluations": 100,
    "noise": "depolarizing:0.001,0.01",
}


def test_same_inputs_give_the_same_64_hex_key() -> None:
    first, second = key_of(), key_of()
    assert first == second and len(first) == 64 and int(first, 16) >= 0
    assert key_of(optimizer_options={"a": 1, "b": 2}) == key_of(optimizer_options={"b": 2, "a": 1})
    assert key_of(mapper="JW") == key_of(mapper="jordan_wigner")  # names are normalised first


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_each_result_deciding_field_changes_the_key(field: str) -> None:
    needs = {"active_electrons": {"active_orbitals": 2}, "noise": {"shots": 1000}}.get(field, {})
    base = key_of(**(needs if field == "noise" else {}))
    assert key_of(**{field: CHANGED[field]}, **needs) != base


def test_adapt_settings_change_the_key_of_adapt_runs() -> None:
    base = key_of(ansatz="adapt")
    assert key_of(ansatz="adapt", adapt_gradient_threshold=1e-3) != base
    assert key_of(ansatz="adapt", adapt_max_operators=10) != base


def test_placement_does_not_change_the_key() -> None:
    base = key_of()
    assert key_of(device="auto") == base and key_of(kernel="aer") == base and key_of(device="GPU") == base


def test_the_molecule_changes_the_key_but_not_its_name_nor_its_units() -> None:
    base = key_of()
    bohr = {**H2, "name": "other", "units": "bohr", "coords": [[0, 0, 0], [0, 0, 0.7414 / 0.529177210903]]}
    assert key_of(molecule=bohr) == base  # same geometry in bohr, another name
    assert key_of(molecule={**H2, "coords": [[0, 0, 0], [0, 0, 0.75]]}) != base
    assert key_of(molecule={**H2, "charge": 1, "multiplicity": 2}) != base
    assert key_of(molecule={**H2, "masses": [2.014, 1.008]}) != base


def test_the_code_version_changes_the_key() -> None:
    base = key_of()
    assert key_of(versions={**VERSIONS, "qp-assets": "0.2.0"}) != base
    assert key_of(versions={**VERSIONS, "science_epoch": "2"}) != base
    assert key_of(versions={**VERSIONS, "qiskit": "2.2.4"}) != base
    current = reuse.code_version()
    assert current["science_epoch"] == str(reuse.SCIENCE_EPOCH) and current["qp-assets"]
    assert {"python", "qiskit", "qiskit-aer", "pyscf", "numpy", "scipy"} <= set(current)


def test_only_reproducible_runs_are_reusable() -> None:
    assert reuse.is_reproducible(VQEConfig())  # HF start, exact, L-BFGS-B: deterministic without a seed
    assert reuse.is_reproducible(VQEConfig(initial_state="random", seed=3))
    for unseeded in (dict(initial_state="random"), dict(shots=100), dict(optimizer="SPSA")):
        assert not reuse.is_reproducible(VQEConfig(**unseeded)), unseeded


def test_a_reused_record_keeps_the_computation_and_takes_the_new_identity() -> None:
    earlier = {"run_id": "run-a", "request_id": "req-a", "event_time": 1, "started_at": 0, "total_energy": -1.1,
               "iterations": [{"iteration": 1}], "experiment_key": "k" * 64, "reused_from": None,
               "scan_id": "s", "scan_point": {"index": 0}}  # fmt: skip
    before = int(time.time() * 1000)
    record = reuse.reused_record(earlier, "req-b", "req-a")
    assert record["reused_from"] == "req-a" and record["request_id"] == "req-b"
    assert record["run_id"] not in ("run-a", "") and len(record["run_id"]) == 36
    assert record["event_time"] == record["started_at"] and record["event_time"] >= before
    assert (record["total_energy"], record["iterations"], record["experiment_key"]) == (
        -1.1,
        [{"iteration": 1}],
        "k" * 64,
    )
    assert (record["scan_id"], record["scan_point"]) == (None, None) and earlier["run_id"] == "run-a"


def row(key, request_id, minute, reused_from=None, message="converged", source="s3a://b/x.avro"):
    return {"experiment_key": key, "request_id": request_id, "run_id": f"run-{request_id}", "reused_from": reused_from,
            "source_file": source, "event_time": datetime(2026, 11, 29, 12, minute, tzinfo=UTC),
            "optimizer_message": message}  # fmt: skip


def test_the_index_keeps_the_earliest_computed_run_per_key() -> None:
    rows = [
        row("k1", "late", 30),
        row("k1", "early", 10),
        row("k1", "reuser", 5, reused_from="early"),  # a reused row never becomes the source
        row("k2", "stopped", 1, message="wall-clock limit 60 s (QP_MAX_WALL_S) reached after 61.0 s"),
        row(None, "old", 1),  # written before the key existed
        row("k3", None, 1),  # no request
        row("k4", "unlanded", 1, source=None),
    ]
    index = runner_reuse.build_index(rows)
    assert index == {"k1": runner_reuse.Earlier("early", "run-early", "s3a://b/x.avro")}


def test_the_landed_record_is_found_by_run_id(tmp_path) -> None:
    import fastavro

    from qp_assets.features.golden import make_result
    from qp_assets.streaming.schemas import RESULT_SCHEMA, schema_dict

    records = [
        {**make_result(i, datetime(2026, 11, 29, 12, i, tzinfo=UTC)), "experiment_key": f"k{i}"}
        for i in range(3)
    ]
    path = tmp_path / "landed.avro"
    with path.open("wb") as fh:
        fastavro.writer(
            fh,
            fastavro.parse_schema(schema_dict(RESULT_SCHEMA)),
            [dict(r, backend={**r["backend"], "kernel": None, "noise_model": None}) for r in records],
        )
    settings = Settings.from_env()
    found = runner_reuse.read_landed_record(settings, f"file://{path}", "run-000001")
    assert (found["run_id"], found["experiment_key"], found["reused_from"]) == ("run-000001", "k1", None)
    assert found["total_energy"] == records[1]["total_energy"]
    with pytest.raises(LookupError, match="run nope is not in file://"):
        runner_reuse.read_landed_record(settings, f"file://{path}", "nope")


def test_the_lookup_is_bounded_and_passes_failures_on(monkeypatch) -> None:
    monkeypatch.setattr(runner_reuse, "_lookup", lambda settings, key, timeout_s: time.sleep(5))
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="took over 0.3 s"):
        runner_reuse.lookup(Settings.from_env(), "k" * 64, 0.3)
    assert time.monotonic() - started < 1.5

    def broken(settings, key, timeout_s):
        raise OSError("S3 down")

    monkeypatch.setattr(runner_reuse, "_lookup", broken)
    with pytest.raises(OSError, match="S3 down"):
        runner_reuse.lookup(Settings.from_env(), "k" * 64, 2.0)
    monkeypatch.setattr(runner_reuse, "_lookup", lambda settings, key, timeout_s: None)
    assert runner_reuse.lookup(Settings.from_env(), "k" * 64, 2.0) is None


class FakeS3:
    """The two calls the reuse index makes (``put_object``, ``get_object``), on a dict; a missing key raises
    the ClientError boto3 raises for it (code NoSuchKey)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.gets = 0

    def put_object(self, Bucket, Key, Body, ContentType):  # noqa: N803 - boto3's own names
        self.objects[(Bucket, Key)] = Body

    def get_object(self, Bucket, Key):  # noqa: N803
        import io

        from botocore.exceptions import ClientError

        self.gets += 1
        if (Bucket, Key) not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "no such key"}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[(Bucket, Key)])}


def test_the_index_object_round_trips_and_its_absence_is_no_index() -> None:
    settings = Settings.from_env()
    s3 = FakeS3()
    assert runner_reuse.read_index(settings, 1.0, s3) is None  # no object yet: no reuse
    index = runner_reuse.build_index([row("k1", "early", 10), row("k1", "late", 30), row("k2", "b", 3)])
    key = runner_reuse.write_index(settings, index, s3)
    assert key == f"reuse-index/{settings.iceberg_catalog_name}/vqe_results.json"
    assert list(s3.objects) == [(settings.bucket, key)]
    assert runner_reuse.read_index(settings, 1.0, s3) == {
        "k1": runner_reuse.Earlier("early", "run-early", "s3a://b/x.avro"),
        "k2": runner_reuse.Earlier("b", "run-b", "s3a://b/x.avro"),
    }
    with pytest.raises(ValueError, match="expected format 1 with 'entries'"):
        runner_reuse.decode_index(b'{"format": 2, "entries": {}}')
    with pytest.raises(ValueError, match=r"entry k1\.\.\. is \['a', 'b'\], not \[request_id, run_id, file\]"):
        runner_reuse.decode_index(b'{"format": 1, "entries": {"k1": ["a", "b"]}}')

    def refused(Bucket, Key):  # noqa: N803
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetObject")

    s3.get_object = refused
    with pytest.raises(Exception, match="AccessDenied"):  # only a missing object means "no index"
        runner_reuse.read_index(settings, 1.0, s3)


def test_an_index_read_answers_the_processs_lookups_while_fresh(monkeypatch) -> None:
    """One GET per :data:`PREFETCH_FRESH_S`: hits and misses are answered from it; after that the object is
    read again, so a key a build added meanwhile is found."""
    settings = Settings.from_env()
    s3 = FakeS3()
    monkeypatch.setattr(runner_reuse, "_client", lambda settings, timeout_s: s3)
    monkeypatch.setattr(runner_reuse, "_READS", {})
    runner_reuse.write_index(settings, runner_reuse.build_index([row("k1", "a", 1)]), s3)
    assert runner_reuse.find_earlier(settings, "k1", 1.0) == runner_reuse.Earlier(
        "a", "run-a", "s3a://b/x.avro"
    )
    assert runner_reuse.find_earlier(settings, "k2", 1.0) is None
    assert s3.gets == 1
    runner_reuse.write_index(settings, runner_reuse.build_index([row("k1", "a", 1), row("k2", "b", 2)]), s3)
    assert runner_reuse.find_earlier(settings, "k2", 1.0) is None and s3.gets == 1  # still the read of before
    monkeypatch.setattr(runner_reuse, "PREFETCH_FRESH_S", 0.0)
    assert runner_reuse.find_earlier(settings, "k2", 1.0) == runner_reuse.Earlier(
        "b", "run-b", "s3a://b/x.avro"
    )
    assert s3.gets == 2


def test_a_stale_or_wrong_index_entry_is_never_reused(monkeypatch) -> None:
    """The record an entry points to is reused only when it is a computed result of that request and key."""
    earlier = runner_reuse.Earlier("req-a", "run-a", "s3a://b/x.avro")
    good = {"run_id": "run-a", "request_id": "req-a", "experiment_key": "k" * 64, "reused_from": None,
            "optimizer_result": {"message": "converged"}}  # fmt: skip
    assert runner_reuse.unusable(good, "k" * 64, earlier) is None
    cases = {
        "its experiment key is mmmmmmmmmmmm...": {**good, "experiment_key": "m" * 64},
        "it reused request 'req-0'": {**good, "reused_from": "req-0"},
        "its request is 'req-x', not 'req-a'": {**good, "request_id": "req-x"},
        "it was stopped by the wall-clock limit": {**good, "optimizer_result": {"message": "wall-clock limit 60 s"}},
    }  # fmt: skip
    for reason, record in cases.items():
        assert runner_reuse.unusable(record, "k" * 64, earlier) == reason
    settings = Settings.from_env()
    monkeypatch.setattr(runner_reuse, "find_earlier", lambda settings, key, timeout_s: earlier)
    monkeypatch.setattr(runner_reuse, "read_landed_record", lambda *a: cases["it reused request 'req-0'"])
    assert runner_reuse.lookup(settings, "k" * 64, 2.0) is None  # computes
    monkeypatch.setattr(runner_reuse, "read_landed_record", lambda *a: good)
    assert runner_reuse.lookup(settings, "k" * 64, 2.0) == runner_reuse.Found(earlier, good)


def test_the_prefetched_index_answers_the_runs_lookups_without_reading_it_again(monkeypatch) -> None:
    """``prefetch_index`` (started when a run has requests that may reuse) reads the index in a child
    process; a look-up that comes while it reads waits for it, and the run's look-ups are answered from it
    (hit or miss) without reading the object in the run's own process."""
    import pickle
    import subprocess
    from types import SimpleNamespace

    earlier = runner_reuse.Earlier("req-0", "run-0", "s3a://b/raw/x.avro")
    children = []

    def child(cmd, input, capture_output, timeout, check):  # noqa: A002 - subprocess.run's own names
        children.append(cmd)
        time.sleep(0.5)  # the child imports boto3 and reads: a look-up arrives meanwhile
        assert pickle.loads(input) == (settings, 4.0)
        return SimpleNamespace(stdout=runner_reuse.encode_index({"k" * 64: earlier}))

    def in_process(settings, timeout_s, client=None):
        raise AssertionError("the run's own process read the index")

    monkeypatch.setattr(subprocess, "run", child)
    monkeypatch.setattr(runner_reuse, "read_index", in_process)
    monkeypatch.setattr(runner_reuse, "_READS", {})
    settings = Settings.from_env()
    started = time.monotonic()
    runner_reuse.prefetch_index(settings, 4.0)
    assert runner_reuse.find_earlier(settings, "k" * 64, 4.0) == earlier  # waited for the child
    assert time.monotonic() - started >= 0.5
    assert runner_reuse.find_earlier(settings, "m" * 64, 4.0) is None  # a miss, answered from the prefetch
    assert children == [[runner_reuse.sys.executable, "-m", "qp_assets.runner.reuse"]]


@pytest.fixture
def tiny_s3():
    """A local HTTP server answering S3 GETs from ``objects`` (path -> bytes; 404 NoSuchKey otherwise), so
    the real child process and boto3 client run without the stack; yields (endpoint url, objects)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    objects: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = objects.get(self.path.split("?")[0])
            status = 200 if body is not None else 404
            if body is None:
                body = b"<Error><Code>NoSuchKey</Code><Message>no such key</Message></Error>"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", objects
    server.shutdown()
    server.server_close()


def test_the_prefetch_child_process_reads_the_object_or_nothing(tiny_s3) -> None:
    """The real child process (``python -m qp_assets.runner.reuse``) through the real bounded boto3 client:
    no object -> empty output (no index); an object -> its bytes."""
    import dataclasses
    import pickle
    import subprocess
    import sys

    endpoint, objects = tiny_s3
    settings = dataclasses.replace(Settings.from_env(), s3_endpoint_url=endpoint, aws_access_key_id="k",
                                   aws_secret_access_key="s", aws_region="us-east-1")  # fmt: skip

    def child() -> bytes:
        return subprocess.run([sys.executable, "-m", "qp_assets.runner.reuse"], input=pickle.dumps((settings, 5.0)),
                              capture_output=True, timeout=60, check=True).stdout  # fmt: skip

    assert child() == b""
    data = runner_reuse.encode_index({"k1": runner_reuse.Earlier("a", "run-a", "s3a://b/x.avro")})
    objects[f"/{settings.bucket}/{runner_reuse.index_object_key(settings)}"] = data
    assert child() == data


def test_force_is_a_request_field_and_a_campaign_option() -> None:
    from qp_assets import campaigns
    from qp_assets.streaming.publisher import request_record

    plain = request_record({"request_id": "r1", "molecule": H2, "seed": 1})
    forced = request_record({"request_id": "r2", "molecule": H2, "seed": 1, "force": True})
    assert (plain["force"], forced["force"]) == (False, True)
    spec = {"name": "t", "molecules": ["H2"], "seeds": [1, 2]}
    assert [r.get("force") for r in campaigns.expand(spec, "c").requests] == [None, None]
    assert [r["force"] for r in campaigns.expand({**spec, "force": True}, "c").requests] == [True, True]
    with pytest.raises(ValueError, match="campaign: field 'force' must be true or false, got 'yes'"):
        campaigns.expand({**spec, "force": "yes"}, "c")


def test_schemas_stay_compatible_with_the_reuse_fields() -> None:
    from qp_assets.streaming.schemas import (
        REQUEST_SCHEMA,
        RESULT_SCHEMA,
        major_incompatibilities,
        schema_dict,
    )

    assert (
        major_incompatibilities(RESULT_SCHEMA, 4) == () and major_incompatibilities(REQUEST_SCHEMA, 2) == ()
    )
    fields = {f["name"]: f for f in schema_dict(RESULT_SCHEMA)["fields"]}
    for name in ("experiment_key", "reused_from"):
        assert fields[name]["type"] == ["null", "string"] and fields[name]["default"] is None
    force = {f["name"]: f for f in schema_dict(REQUEST_SCHEMA)["fields"]}["force"]
    assert (force["type"], force["default"]) == ("boolean", False)


def test_an_existing_table_gets_the_missing_reuse_columns() -> None:
    from qp_assets.features.transforms import TABLES, add_columns_sql

    spec = TABLES["vqe_results"]
    names = [f.name for f in spec.schema.fields]
    assert names[-2:] == ["experiment_key", "reused_from"]
    sql = add_columns_sql("cat", "ns", spec, set(names[:-2]))
    assert sql.startswith(
        "ALTER TABLE cat.ns.vqe_results ADD COLUMNS (`experiment_key` string COMMENT 'Result-reuse key"
    )
    assert "`reused_from` string COMMENT 'request_id of the earlier run" in sql
    assert add_columns_sql("cat", "ns", spec, set(names)) is None
    with pytest.raises(ValueError, match=r"lacks key column\(s\) \['run_id'\]: recreate it"):
        add_columns_sql("cat", "ns", spec, set(names) - {"run_id"})


def test_settings_default_to_reuse_with_a_bounded_lookup() -> None:
    from qp_assets.settings import load_env

    env = load_env({})
    assert (env.reuse_results, env.reuse_lookup_timeout_s) == (True, 10.0)
    env = load_env({"QP_REUSE_RESULTS": "0", "QP_REUSE_LOOKUP_TIMEOUT_S": "2.5"})
    assert (env.reuse_results, env.reuse_lookup_timeout_s) == (False, 2.5)


def test_only_requests_that_may_reuse_are_looked_up(monkeypatch) -> None:
    """``reuse_refusal`` decides both whether a request looks up and whether a run prefetches the index."""
    from qp_assets.runner.process import reuse_refusal

    seeded, unseeded = VQEConfig(seed=1), VQEConfig(seed=None, initial_state="random")
    assert reuse_refusal({"request_id": "r"}, seeded) is None
    assert reuse_refusal({"request_id": "r"}, VQEConfig(seed=None)) is None  # HF start, exact: deterministic
    assert reuse_refusal({"request_id": "r", "scan": {"points": 3}}, seeded) == "a scan"
    assert reuse_refusal({"request_id": "r", "force": True}, seeded) == "forced"
    assert reuse_refusal({"request_id": "r"}, unseeded) == "not reproducible (random without a seed)"
    monkeypatch.setenv("QP_REUSE_RESULTS", "0")
    assert reuse_refusal({"request_id": "r"}, seeded) == "reuse off (QP_REUSE_RESULTS)"
