"""Unit tests of streaming logic: topic naming, schema evolution, security config, request records."""

from __future__ import annotations

import io
import re
import time
from datetime import UTC, datetime

import fastavro
import pytest

from qp_assets.features.golden import as_v4, make_result
from qp_assets.streaming import schemas
from qp_assets.streaming.kafka_config import security_config
from qp_assets.streaming.publisher import request_record
from qp_assets.streaming.schemas import latest_version, major_incompatibilities, schema_dict, versions
from qp_assets.streaming.serde import SchemaIncompatibleError, ValueSerializer
from qp_assets.streaming.topics import RESULT_TOPIC_REGEX, configuration_suffix, result_topic, sanitize_part

KAFKA_LEGAL = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
WHEN = datetime(2026, 11, 20, 12, 30, tzinfo=UTC)


def test_sanitize_keeps_distinct_basis_names_distinct_and_legal() -> None:
    names = [
        "sto3g",
        "STO-3G",
        "6-31g",
        "6-31g*",
        "6-31+g",
        "6-31++g**",
        "cc-pvdz",
        "aug-cc-pVTZ",
        "def2 svp",
    ]
    parts = [sanitize_part(n) for n in names]
    assert parts[:4] == ["sto3g", "sto3g", "631g", "631gs"]
    assert parts[4] == "631pg" and parts[5] == "631ppgss" and parts[8] == "def2_svp"
    assert all(re.fullmatch(r"[a-z0-9_]+", p) for p in parts)


def test_long_parts_are_bounded_and_do_not_collide() -> None:
    a, b = sanitize_part("x" * 100 + "a"), sanitize_part("x" * 100 + "b")
    assert len(a) == len(b) == 24 and a != b


def test_result_topic_depends_only_on_configuration() -> None:
    rec = make_result(1, WHEN)
    topic = result_topic(rec, 3)
    assert topic == "vqe_result_v3.sto3g-jw-uccsd-sv-exact-cpu"
    assert KAFKA_LEGAL.match(topic) and re.fullmatch(RESULT_TOPIC_REGEX, topic)
    other = make_result(2, WHEN, num_iterations=9, run_id="another-run")
    other["backend"]["seed"] = 999
    assert result_topic(other, 3) == topic  # seed, run id, iteration count never change the topic
    other["backend"]["shots"] = 1000
    other["backend"]["device_used"] = "GPU"
    assert result_topic(other, 3) == "vqe_result_v3.sto3g-jw-uccsd-sv-shots-gpu"
    assert result_topic(rec, 1).startswith("vqe_result_v1.")


def test_topic_cardinality_is_bounded_by_configuration_choices() -> None:
    topics = {
        configuration_suffix(basis=b, mapper=m, ansatz=a, backend_method=k, shots=s, device=d)
        for b in ("sto3g", "6-31g")
        for m in ("jordan_wigner", "parity", "bravyi_kitaev")
        for a in ("uccsd", "efficient_su2")
        for k in ("statevector", "matrix_product_state")
        for s in (None, 100, 200, 300)
        for d in ("CPU", "GPU")
    }
    assert len(topics) == 2 * 3 * 2 * 2 * 2 * 2  # shot counts collapse to "shots"


def _roundtrip(record: dict, writer: dict, reader: dict) -> dict:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(writer), record)
    buf.seek(0)
    return fastavro.schemaless_reader(buf, fastavro.parse_schema(writer), fastavro.parse_schema(reader))


def _as_version(record: dict, version: int) -> dict:
    """A v3 record reshaped as version ``version`` would have written it."""
    rec = dict(record)
    if version < 3:
        rec.pop("performance_snapshots")
        rec["iterations"] = [
            {**{k: v for k, v in it.items() if k not in ("std", "cumulative_min_energy")},
             "cumulative_min": it["cumulative_min_energy"]}
            for it in record["iterations"]
        ]  # fmt: skip
    if version < 2:
        rec.pop("request_id")
        rec.pop("error_vs_exact_mha")
    return rec


def test_result_schema_history_has_four_versions() -> None:
    assert versions("vqe_result") == [1, 2, 3, 4] and latest_version("vqe_result") == 4
    v1, v2, v3 = (schema_dict("vqe_result", v) for v in (1, 2, 3))
    assert {f["name"] for f in v2["fields"]} - {f["name"] for f in v1["fields"]} == {
        "request_id",
        "error_vs_exact_mha",
    }
    assert all("default" in f for f in v2["fields"] if f["name"] in ("request_id", "error_vs_exact_mha"))


@pytest.mark.parametrize("writer_version", [1, 2, 3])
def test_v3_reader_reads_every_version(writer_version: int) -> None:
    original = make_result(7, WHEN, num_iterations=4)
    written = _as_version(original, writer_version)
    out = _roundtrip(written, schema_dict("vqe_result", writer_version), schema_dict("vqe_result", 3))
    assert out["run_id"] == "run-000007"
    assert [it["cumulative_min_energy"] for it in out["iterations"]] == [
        it["cumulative_min_energy"] for it in original["iterations"]
    ]  # renamed field resolved through its alias
    assert out["timings"]["total_s"] == pytest.approx(2.1, rel=1e-6)  # float promoted to double
    if writer_version < 3:
        assert out["performance_snapshots"] == [] and all(it["std"] is None for it in out["iterations"])
    if writer_version < 2:
        assert out["request_id"] is None and out["error_vs_exact_mha"] is None
    else:
        assert out["request_id"] == "req-000007"


def test_v4_adds_only_optional_fields_and_v3_v4_readers_read_each_other() -> None:
    v3, v4 = schema_dict("vqe_result", 3), schema_dict("vqe_result", 4)
    added = {f["name"] for f in v4["fields"]} - {f["name"] for f in v3["fields"]}
    assert added == {"adapt", "scan_id", "scan_point", "experiment_key", "reused_from"}  # the last two: v4.1
    assert all(f.get("default", "absent") is None for f in v4["fields"] if f["name"] in added)
    record = {**as_v4(make_result(5, WHEN, num_iterations=3), point=2), "experiment_key": "k" * 64,
              "reused_from": "req-000001"}  # fmt: skip
    old = _roundtrip(record, v4, v3)  # a v3 reader (the feature build's) reads a v4 record
    assert old == _roundtrip(make_result(5, WHEN, num_iterations=3), v3, v3)
    new = _roundtrip(record, v4, v4)
    assert new["backend"]["kernel"] == "sector" and new["scan_id"] == "scan-0001"
    assert (new["experiment_key"], new["reused_from"]) == ("k" * 64, "req-000001")
    assert new["scan_point"] == {"index": 2, "num_points": 3, "atoms": [0, 1], "distance": pytest.approx(0.8)}
    assert (
        [it["operator"] for it in new["iterations"]]
        == new["adapt"]["operators"]
        == ["0,2->1,3", "0,2->2,3", "0,2->1,3"]
    )
    from_v3 = _roundtrip(make_result(5, WHEN), v3, v4)  # and a v4 reader reads v3 records with defaults
    assert (from_v3["backend"]["kernel"], from_v3["adapt"], from_v3["scan_id"], from_v3["scan_point"],
            from_v3["experiment_key"], from_v3["reused_from"]) == (None,) * 6  # fmt: skip
    assert all(it["operator"] is None for it in from_v3["iterations"])


def _with_schema(tmp_path, monkeypatch, v4: dict) -> None:
    """Point the schema registry of files at ``tmp_path`` holding the real v3 and the given v4."""
    import json

    (tmp_path / "vqe_result_v3.avsc").write_text(schemas.schema_text("vqe_result", 3))
    (tmp_path / "vqe_result_v4.avsc").write_text(json.dumps(v4))
    monkeypatch.setattr(schemas, "SCHEMA_DIR", tmp_path)
    schemas.schema_text.cache_clear()
    schemas.major_incompatibilities.cache_clear()


@pytest.fixture
def fresh_schema_caches():
    yield
    schemas.schema_text.cache_clear()
    schemas.major_incompatibilities.cache_clear()


def test_shipped_majors_pass_the_major_check() -> None:
    assert major_incompatibilities("vqe_result", 4) == ()
    assert major_incompatibilities("vqe_result", 3) == ()  # predates the check (FIRST_CHECKED_MAJOR)


def test_an_incompatible_new_major_is_refused_before_the_registry_naming_the_fields(
    tmp_path, monkeypatch, fresh_schema_caches
) -> None:
    v4 = schema_dict("vqe_result", 4)
    v4["fields"] = [f for f in v4["fields"] if f["name"] != "basis"]  # dropped: v3 readers need it
    backend = next(f for f in v4["fields"] if f["name"] == "backend")["type"]
    next(f for f in backend["fields"] if f["name"] == "kernel").pop("default")  # v3 records lack it
    backend["fields"] = [{**f, "type": "int"} if f["name"] == "method" else f for f in backend["fields"]]
    _with_schema(tmp_path, monkeypatch, v4)
    problems = major_incompatibilities("vqe_result", 4)
    assert len(problems) == 2
    assert problems[0].startswith("v3 reader, v4 writer: fields backend.method, basis (")
    assert problems[1].startswith("v4 reader, v3 writer: fields backend.kernel, backend.method (")
    assert (
        "kernel" in problems[1] and "reader type: int not compatible with writer type: string" in problems[1]
    )
    # refused before any registry call: the URL is never contacted (nothing listens there)
    with pytest.raises(
        SchemaIncompatibleError,
        match=r"vqe_result v4 is not compatible with v3 .*'vqe_result_v4\.x-value'.*basis",
    ):
        ValueSerializer("http://127.0.0.1:9/apis/ccompat/v7", "vqe_result_v4.x", "vqe_result", 4)


def test_older_readers_read_newer_records_where_avro_allows() -> None:
    original = make_result(3, WHEN)
    out = _roundtrip(_as_version(original, 2), schema_dict("vqe_result", 2), schema_dict("vqe_result", 1))
    assert "request_id" not in out and out["total_energy"] == original["total_energy"]


def test_security_config_passes_sasl_scram_through() -> None:
    env = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "alice",
        "KAFKA_SASL_PASSWORD": "pw",
        "KAFKA_SSL_CA_LOCATION": "/etc/ca.pem",
    }
    assert security_config(env) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": "pw",
        "ssl.ca.location": "/etc/ca.pem",
    }
    assert security_config({}) == {}


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL='TLS'"),
        ({"KAFKA_SASL_MECHANISM": "GSSAPI2"}, "KAFKA_SASL_MECHANISM='GSSAPI2'"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "needs KAFKA_SASL_USERNAME"),
    ],
)
def test_security_config_rejects_bad_values_naming_the_variable(env: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=re.escape(needle)):
        security_config(env)


def test_request_record_validates_and_fills_defaults() -> None:
    from qp_assets.vqe.errors import InputError

    mol = {"name": "H2", "symbols": ["H", "H"], "coords": [[0, 0, 0], [0, 0, 0.74]]}
    rec = request_record({"request_id": "r1", "molecule": mol, "optimizer_options": {"maxiter": 5}})
    assert rec["request_id"] == "r1" and rec["optimizer_options"] == '{"maxiter": 5}'
    assert rec["basis"] == "sto3g" and rec["mapper"] == "jordan_wigner" and rec["shots"] is None
    fastavro.validation.validate(rec, fastavro.parse_schema(schema_dict("vqe_request")), raise_errors=True)
    assert request_record(rec)["optimizer_options"] == rec["optimizer_options"]  # idempotent
    with pytest.raises(InputError, match="optimizer"):
        request_record({"molecule": mol, "optimizer": "ADAMW"})
    with pytest.raises(InputError, match="symbols"):
        request_record({"molecule": {**mol, "symbols": ["H", "Xx"]}})


def test_scan_requests_are_validated_and_fit_request_schema_v2() -> None:
    from qp_assets.vqe.errors import InputError

    assert versions("vqe_request") == [1, 2] and major_incompatibilities("vqe_request", 2) == ()
    mol = {"name": "H2", "symbols": ["H", "H"], "coords": [[0, 0, 0], [0, 0, 0.74]]}
    scan = {"atoms": [0, 1], "start": 0.5, "stop": 2.5, "points": 21}
    rec = request_record({"request_id": "s1", "molecule": mol, "scan": scan})
    assert rec["scan"] == {**scan, "warm_start": True}
    fastavro.validation.validate(rec, fastavro.parse_schema(schema_dict("vqe_request", 2)), raise_errors=True)
    assert request_record({"request_id": "r", "molecule": mol})["scan"] is None
    for bad, field in (({"atoms": [0, 2]}, "'stretch' = 0,2"), ({"atoms": [0]}, "'atoms'"),
                       ({"points": 102}, "'points' must be an integer in 1..101"), ({"start": 0.05}, "0.0500 angstrom apart")):  # fmt: skip
        with pytest.raises(InputError, match=field):
            request_record({"request_id": "s", "molecule": mol, "scan": {**scan, **bad}})


def test_request_submit_scan_options(capsys) -> None:
    from qp_assets.cli import main

    for extra, message in ((["--scan", "--stretch", "0,1"], "--scan needs --from, --to, --points"),
                           (["--points", "5"], "--points need(s) --scan"),
                           (["--scan", "--stretch", "a", "--from", "1", "--to", "2", "--points", "3"],
                            "field 'stretch' must be I,J")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main(["request", "submit", "-m", "H2", *extra])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_registry_outage_is_told_apart_from_a_bad_payload() -> None:
    import httpx
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    from qp_assets.streaming.requests import is_registry_outage

    assert is_registry_outage(httpx.ConnectError("refused"))
    assert is_registry_outage(SchemaRegistryError(503, 50301, "unavailable"))
    wrapped = ValueError("decode failed")
    wrapped.__cause__ = httpx.ReadTimeout("slow")
    assert is_registry_outage(wrapped)
    assert not is_registry_outage(SchemaRegistryError(404, 40403, "schema not found"))
    assert not is_registry_outage(ValueError("not avro"))
    assert not is_registry_outage(EOFError())


def test_event_time_ms_of_a_result_record() -> None:
    from qp_assets.streaming.publisher import event_time_ms

    when = datetime(2026, 11, 28, 22, 5, tzinfo=UTC)
    assert event_time_ms(make_result(0, when)) == 1795903500000
    assert event_time_ms({"event_time": 1795903500000}) == 1795903500000  # as spooled (epoch ms)
    assert event_time_ms({"event_time": None}) is None and event_time_ms({}) is None
    assert event_time_ms({"event_time": True}) is None


def test_corrupt_spool_files_are_skipped_kept_and_counted(tmp_path, monkeypatch, caplog) -> None:
    """No network: every file fails to parse, so nothing is contacted; each is kept and named in a warning."""
    import dataclasses

    from qp_assets.settings import Settings
    from qp_assets.streaming.publisher import replay_spool, spool_dir

    settings = dataclasses.replace(Settings.from_env(), runtime_dir=tmp_path)
    spool = spool_dir(settings)
    cut = spool / "a-cut.json"
    cut.write_text('{"topic": "vqe_result_v3.x", "key": ')
    fields = spool / "b-fields.json"
    fields.write_text('{"topic": "vqe_result_v3.x"}')
    binary = spool / "c-binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with caplog.at_level("WARNING"):
        assert replay_spool(settings) == (0, 3)
    assert cut.exists() and fields.exists() and binary.exists()
    for path in (cut, fields, binary):
        assert any(str(path) in r.getMessage() and "unreadable" in r.getMessage() for r in caplog.records)


def test_close_producers_drops_the_cached_producers() -> None:
    """``close_producers`` empties the per-process cache: the next publish builds a new producer."""
    import dataclasses

    from qp_assets.settings import Settings
    from qp_assets.streaming import publisher

    settings = dataclasses.replace(
        Settings.from_env(), kafka_bootstrap_servers="127.0.0.1:9"
    )  # nothing there
    first = publisher._producer(settings)
    assert publisher._producer(settings) is first  # cached
    assert publisher.close_producers(timeout_s=0.1) == 0  # nothing was queued
    assert publisher._PRODUCERS == {}
    second = publisher._producer(settings)
    assert second is not first
    publisher.close_producers(timeout_s=0.1)


def test_a_failed_delivery_discards_the_producer_and_the_next_publish_builds_a_new_one(monkeypatch) -> None:
    """A producer whose message timed out is not reused (an idempotent producer in that state can time out
    every later message too): ``produce_acked`` raises PublishError, drops it from the cache, and the next
    call gets a new producer. Nothing listens on the port, so the message times out after 1.5 s."""
    import dataclasses

    from qp_assets.settings import Settings
    from qp_assets.streaming import publisher

    monkeypatch.setenv("QP_KAFKA_DELIVERY_TIMEOUT_MS", "1500")
    monkeypatch.setattr(publisher, "LEADER_CHECK_TIMEOUT_S", 0.5)  # the retry's leader check finds none
    settings = dataclasses.replace(Settings.from_env(), kafka_bootstrap_servers="127.0.0.1:9")
    first = publisher._producer(settings)
    started = time.monotonic()
    with pytest.raises(publisher.PublishError, match="Message timed out"):
        publisher.produce_acked(settings, "qp_unit_topic", "k1", b"v")
    assert time.monotonic() - started < 5  # 1.5 s delivery timeout + 0.5 s leader check, not more
    assert first not in publisher._PRODUCERS.values()
    second = publisher._producer(settings)
    assert second is not first
    assert publisher._producer(settings) is second  # cached again until it fails
    publisher.close_producers(timeout_s=0.1)


def test_a_failed_delivery_is_sent_once_more_only_when_a_new_producer_finds_the_leader(monkeypatch) -> None:
    """``produce_acked``'s one retry: with a new producer when Kafka answers with a leader for the topic
    (the broker is up, the old producer was stuck), never when it does not (Kafka down: the caller spools)."""
    from qp_assets.settings import Settings
    from qp_assets.streaming import publisher

    settings = Settings.from_env()
    attempts: list[str] = []

    def once_then_ok(_settings, topic, key, value, timestamp_ms=None):
        attempts.append(key)
        if len(attempts) == 1:
            raise publisher.PublishError(
                f"Kafka did not acknowledge {topic} key {key}: Local: Message timed out"
            )
        return 0, 41

    monkeypatch.setattr(publisher, "_produce_once", once_then_ok)
    monkeypatch.setattr(publisher, "topic_has_leaders", lambda s, t: True)
    assert publisher.produce_acked(settings, "t", "k", b"v") == (0, 41)
    assert attempts == ["k", "k"]

    attempts.clear()
    monkeypatch.setattr(publisher, "topic_has_leaders", lambda s, t: False)
    with pytest.raises(publisher.PublishError, match="Message timed out"):
        publisher.produce_acked(settings, "t", "k", b"v")
    assert attempts == ["k"]


def test_topic_has_leaders_is_false_within_its_timeout_when_no_broker_answers() -> None:
    import dataclasses

    from qp_assets.settings import Settings
    from qp_assets.streaming import publisher

    settings = dataclasses.replace(Settings.from_env(), kafka_bootstrap_servers="127.0.0.1:9")
    started = time.monotonic()
    assert publisher.topic_has_leaders(settings, "t", timeout_s=1.0) is False
    assert time.monotonic() - started < 3
    publisher.close_producers(timeout_s=0.1)
