"""``qp_assets.runner.process.process_request``: one request end to end with fake side effects (no
Dagster, no services). One test runs the real H2 simulation (~2 s); the others fake it (< 0.1 s each)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest

from qp_assets.runner.process import Steps, process_request
from qp_assets.settings import Settings
from qp_assets.vqe.errors import InputError

H2 = {"name": "H2", "symbols": ["H", "H"], "coords": [[0, 0, 0], [0, 0, 0.7414]]}
#: FCI of H2 / STO-3G at 0.7414 A (../shared/data/reference_molecules.json), hartree.
H2_FCI_HA = -1.137270


class Recorder:
    """Fakes of every side effect, recording what was asked of them."""

    def __init__(self, *, run=None, published=True, publish_error=None, metrics_error=None):
        self.dead_letters: list[tuple[str, str, str]] = []
        self.published: list = []
        self.released = 0
        self._run, self._published, self._publish_error = run, published, publish_error
        self._metrics_error = metrics_error

    def steps(self) -> Steps:
        def pin(device, lock_dir):
            return SimpleNamespace(device="CPU", note=f"{device} -> CPU (test)", release=self._release)

        def publish(result, settings):
            if self._publish_error:
                raise self._publish_error
            self.published.append(result)
            return SimpleNamespace(published=self._published, topic="vqe_result_v4.test", partition=0,
                                   offset=7 if self._published else None, spool_path="/spool/x", error="down")  # fmt: skip

        def push(result, settings):
            if self._metrics_error:
                raise self._metrics_error
            return True

        real = Steps()
        return Steps(
            run=self._run or real.run,
            publish=publish,
            dead_letter=lambda req, err, settings, stage, topic: self.dead_letters.append(
                (stage, err, topic)
            ),
            push_metrics=push,
            plot=lambda result: b"\x89PNG fake",
            pin=pin,
            monitor=lambda: None,
            lookup=lambda settings, key, timeout_s: None,  # no earlier result (tests/test_reuse_units.py)
        )

    def _release(self) -> None:
        self.released += 1


def fake_result(**kw):
    base = dict(run_id="run-1", molecule_name="H2", total_energy=-1.1372, exact_energy=-1.13727,
                error_vs_exact_mha=0.07, iterations=[1, 2, 3], optimizer_result={"message": "ok"},
                device_used="CPU", timings={"total_s": 0.5}, experiment_key=None, reused_from=None)  # fmt: skip
    return SimpleNamespace(**{**base, **kw})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return dataclasses.replace(Settings.from_env(), runtime_dir=tmp_path)


def request(**config) -> dict:
    return {"request_id": "req-1", "molecule": H2, "config": {"basis": "sto3g", "seed": 1, **config}}


def test_real_h2_run_is_published_with_its_energy_metadata_and_plot(settings: Settings) -> None:
    fakes = Recorder()
    done = process_request(request(), settings, steps=fakes.steps())
    assert done.status == "published" and not fakes.dead_letters and fakes.released == 1
    assert done.metadata["total_energy_ha"] == pytest.approx(H2_FCI_HA, abs=1e-5)
    assert done.metadata["exact_energy_ha"] == pytest.approx(H2_FCI_HA, abs=1e-5)
    assert done.output["total_energy"] >= done.metadata["exact_energy_ha"] - 1e-9  # the variational bound
    assert (done.metadata["kafka_offset"], done.metadata["metrics_pushed"]) == (7, True)
    assert (
        done.acked_at is not None
        and done.plots["convergence_plot"] == settings.runtime_dir / "plots" / f"{done.output['run_id']}.png"
    )
    assert (
        done.plots["convergence_plot"].read_bytes() == b"\x89PNG fake"
        and fakes.published[0].run_id == done.output["run_id"]
    )
    # the topic created ahead of the publish (while the request simulates) is the one it was published to
    from qp_assets.runner.process import expected_result_topic, request_inputs
    from qp_assets.streaming.schemas import RESULT_SCHEMA, latest_version
    from qp_assets.streaming.topics import result_topic

    published = result_topic(fakes.published[0].to_record(), latest_version(RESULT_SCHEMA))
    assert (
        expected_result_topic(request_inputs(request())[1])
        == published
        == "vqe_result_v4.sto3g-jw-uccsd-sv-exact-cpu"
    )


def test_expected_result_topic_per_configuration() -> None:
    from qp_assets.runner.process import expected_result_topic
    from qp_assets.vqe.config import VQEConfig

    assert (
        expected_result_topic(VQEConfig(basis="6-31G", mapper="parity"))
        == "vqe_result_v4.631g-parity-uccsd-sv-exact-cpu"
    )
    assert expected_result_topic(VQEConfig(shots=1000, ansatz="efficient_su2", initial_state="zeros")) == (
        "vqe_result_v4.sto3g-jw-efficient_su2-sv-shots-cpu"
    )
    assert expected_result_topic(VQEConfig(device="GPU")) is None  # the device used is known only at run time


def test_bad_input_is_dead_lettered_at_admission_and_never_run(settings: Settings) -> None:
    fakes = Recorder(run=lambda *a, **k: pytest.fail("must not run"))
    done = process_request(
        request(mapper="nope"), settings, request_topic="vqe.requests.x", steps=fakes.steps()
    )
    assert done.status == "rejected" and done.metadata["stage"] == "admission"
    assert [(stage, topic) for stage, _err, topic in fakes.dead_letters] == [("admission", "vqe.requests.x")]
    assert "mapper" in fakes.dead_letters[0][1] and fakes.released == 0


def test_input_error_found_by_the_run_is_dead_lettered_and_releases_the_slot(settings: Settings) -> None:
    def run(*args, **kwargs):
        raise InputError("molecule H2: field 'device' = 'GPU': no GPU visible")

    fakes = Recorder(run=run)
    done = process_request(request(), settings, steps=fakes.steps())
    assert (done.status, done.metadata["stage"], fakes.released) == ("rejected", "run", 1)
    assert fakes.dead_letters[0][1] == "molecule H2: field 'device' = 'GPU': no GPU visible"


def test_a_result_too_large_for_kafka_dead_letters_the_request(settings: Settings) -> None:
    from qp_assets.streaming.publisher import RecordTooLargeError

    fakes = Recorder(run=lambda *a, **k: fake_result(), publish_error=RecordTooLargeError("2 MiB > 1 MiB"))
    done = process_request(request(), settings, steps=fakes.steps())
    assert (done.status, done.metadata["stage"]) == ("rejected", "publish")
    assert fakes.dead_letters[0][1] == "result run-1: 2 MiB > 1 MiB"


def test_spooled_result_and_failed_metrics_still_report_the_result(settings: Settings) -> None:
    fakes = Recorder(run=lambda *a, **k: fake_result(), published=False, metrics_error=OSError("refused"))
    done = process_request(request(), settings, steps=fakes.steps())
    assert (done.status, done.acked_at, done.metadata["metrics_pushed"]) == ("spooled", None, False)
    assert (done.metadata["kafka_offset"], done.output["run_id"], done.metadata["iterations"]) == (
        -1,
        "run-1",
        3,
    )


def test_scan_request_publishes_every_point_and_dead_letters_an_oversized_one(settings: Settings) -> None:
    """A 2-point H2 scan (real simulation, ~2 s): each point is published as its own result, in order; a
    point Kafka refuses for its size is dead-lettered with its point request id, the others still count."""
    from qp_assets.streaming.publisher import RecordTooLargeError

    fakes = Recorder()
    steps = fakes.steps()
    sizes = iter([None, RecordTooLargeError("2 MiB > 1 MiB")])

    def publish(result, settings_):
        error = next(sizes)
        if error:
            raise error
        return steps.publish(result, settings_)

    scan = {"atoms": [0, 1], "start": 0.7, "stop": 0.8, "points": 2, "warm_start": True}
    done = process_request(
        {**request(), "scan": scan}, settings, steps=dataclasses.replace(steps, publish=publish)
    )
    assert (
        done.status == "published" and done.metadata["scan_points"] == 2 and done.metadata["published"] == 1
    )
    assert [o["status"] for o in done.json["result_offsets"]] == ["published", "rejected"]
    assert [(stage, err.split(":")[0]) for stage, err, _t in fakes.dead_letters] == [
        ("publish", f"result {done.json['run_ids'][1]}")
    ]
    assert done.output["run_ids"] == [fakes.published[0].run_id] and fakes.released == 1
    assert done.output["total_energy"] == pytest.approx(-1.1372, abs=2e-3)  # the minimum lies near 0.74 A
    assert "| 0.7000 |" in done.markdown["points"] and "| 0.8000 |" in done.markdown["points"]


def test_an_earlier_result_of_the_same_experiment_is_reused_without_simulating(settings: Settings) -> None:
    """The real H2 run, then the same experiment as another request: the second publishes the first's
    result for its own request id, marked reused_from, and no simulation runs; forced, it computes."""
    from qp_assets.runner.reuse import Earlier, Found
    from qp_assets.vqe.result import load_schema

    first = Recorder()
    done = process_request(request(), settings, steps=first.steps())
    computed = first.published[0]
    assert done.metadata["reused_from"] == "" and len(computed.experiment_key) == 64
    asked: list[tuple[str, float]] = []

    def lookup(settings_, key, timeout_s):
        asked.append((key, timeout_s))
        return Found(Earlier("req-1", computed.run_id, "s3a://b/raw/x.avro"), computed.to_record())

    again = Recorder(run=lambda *a, **k: pytest.fail("a reused result must not simulate"))
    steps = dataclasses.replace(again.steps(), lookup=lookup)
    reused = process_request({**request(), "request_id": "req-2"}, settings, steps=steps)
    assert asked == [(computed.experiment_key, 10.0)] and again.released == 0  # no device slot either
    (result,) = again.published
    assert (result.request_id, result.reused_from, result.experiment_key) == (
        "req-2",
        "req-1",
        computed.experiment_key,
    )
    assert result.run_id != computed.run_id and result.event_time >= computed.event_time
    assert result.total_energy == computed.total_energy and result.iterations == computed.iterations
    assert result.optimal_parameters == computed.optimal_parameters
    assert (reused.status, reused.output["reused_from"], reused.metadata["reused_from"]) == (
        "published",
        "req-1",
        "req-1",
    )
    assert reused.metadata["placement"] == "none: the result was reused, nothing simulated"
    import fastavro

    assert fastavro.validate(result.to_record(), load_schema())

    forced = Recorder()
    steps = dataclasses.replace(
        forced.steps(), lookup=lambda *a: pytest.fail("a forced request looks nothing up")
    )
    done = process_request({**request(), "request_id": "req-3", "force": True}, settings, steps=steps)
    (result,) = forced.published
    assert (done.metadata["reused_from"], result.reused_from, forced.released) == ("", None, 1)
    assert result.experiment_key == computed.experiment_key


@pytest.mark.parametrize("error", [TimeoutError("took over 10 s"), OSError("S3 down")])
def test_a_failed_lookup_computes_and_says_so(settings: Settings, caplog, error: Exception) -> None:
    import logging

    def lookup(settings_, key, timeout_s):
        raise error

    fakes = Recorder(run=lambda *a, **k: fake_result())
    steps = dataclasses.replace(fakes.steps(), lookup=lookup)
    with caplog.at_level(logging.WARNING, logger="qp_assets.runner.process"):
        done = process_request(request(), settings, steps=steps)
    assert done.status == "published" and len(fakes.published) == 1 and fakes.released == 1
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("result look-up of 'req-1' failed after ")
    assert warning.endswith(f"s, computing instead: {type(error).__name__}: {error}")


def test_an_unseeded_random_run_is_never_looked_up(settings: Settings) -> None:
    fakes = Recorder(run=lambda *a, **k: fake_result())
    steps = dataclasses.replace(fakes.steps(), lookup=lambda *a: pytest.fail("not reproducible: no look-up"))
    done = process_request(request(initial_state="random", seed=None), settings, steps=steps)
    assert done.status == "published" and len(fakes.published) == 1
