"""Unit tests of sensors.range_retry: which failed request ranges are re-run, which are dead-lettered."""

from __future__ import annotations

from types import SimpleNamespace

from dagster import DagsterRunStatus as S

from qp_assets.sensors.range_retry import DEAD_TAG, decide, group_ranges


def _run(run_id: str, status, rng: str = "0-3", partition: str = "1", **tags: str):
    base = {"qp/request_topic": "vqe.requests", "qp/request_partition": partition, "qp/offset_range": rng}
    return SimpleNamespace(run_id=run_id, status=status, tags={**base, **tags})


def _decide(runs, max_attempts=3, delay=60.0, now=1000.0, ended=900.0):
    ranges = group_ranges(runs)
    decision = decide(ranges, {r.run_id: ended for r in runs}, max_attempts, delay, now)
    return [(r.run_key, n) for r, n in decision.retry], [r.run_key for r in decision.dead]


def test_group_ranges_by_topic_partition_offsets_and_skip_untagged() -> None:
    runs = [_run("a", S.FAILURE), _run("b", S.FAILURE, partition="2"), _run("c", S.FAILURE)]
    untagged = SimpleNamespace(run_id="d", status=S.FAILURE, tags={"qp/offset_range": "x-y"})
    groups = group_ranges([*runs, untagged])
    assert [(g.run_key, [r.run_id for r in g.runs]) for g in groups] == [
        ("vqe.requests:1:0-3", ["a", "c"]),
        ("vqe.requests:2:0-3", ["b"]),
    ]


def test_failed_range_is_retried_with_next_attempt_number() -> None:
    assert _decide([_run("a", S.FAILURE)]) == ([("vqe.requests:1:0-3", 2)], [])
    assert _decide([_run("b", S.FAILURE), _run("a", S.CANCELED)]) == ([("vqe.requests:1:0-3", 3)], [])


def test_retry_waits_for_the_delay_after_the_last_run_ended() -> None:
    assert _decide([_run("a", S.FAILURE)], delay=60.0, now=950.0, ended=900.0) == ([], [])
    assert _decide([_run("a", S.FAILURE)], delay=50.0, now=950.0, ended=900.0) == (
        [("vqe.requests:1:0-3", 2)],
        [],
    )


def test_success_or_unfinished_run_means_nothing_to_do() -> None:
    assert _decide([_run("b", S.SUCCESS), _run("a", S.FAILURE)]) == ([], [])
    for status in (S.QUEUED, S.NOT_STARTED, S.STARTING, S.STARTED):
        assert _decide([_run("b", status), _run("a", S.FAILURE)]) == ([], [])


def test_max_attempts_failed_is_dead_lettered_once() -> None:
    failed = [_run("c", S.FAILURE), _run("b", S.FAILURE), _run("a", S.FAILURE)]
    assert _decide(failed, max_attempts=3) == ([], ["vqe.requests:1:0-3"])
    tagged = [_run("c", S.FAILURE, **{DEAD_TAG: "true"}), *failed[1:]]
    assert _decide(tagged, max_attempts=3) == ([], [])


def test_dead_letter_alert_mail_that_cannot_be_sent_is_logged_not_raised(monkeypatch) -> None:
    from qp_assets.sensors.definitions import mail_dead_lettered

    monkeypatch.setenv("QP_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("QP_SMTP_PORT", "9")  # discard port: nothing listens, refused at once
    logged: list[str] = []

    class Log:
        error = logged.append

    assert (
        mail_dead_lettered(["range vqe.requests:0:1-2 failed 5 times: 1 request(s) dead-lettered"], Log())
        is False
    )
    (line,) = logged
    assert line.startswith("dead-lettered range alert not mailed via SMTP 127.0.0.1:9:")
