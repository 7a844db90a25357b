"""The landing layout (qp_assets.landing): keys as the S3 sink plugin writes them, and their day."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from qp_assets import landing

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "vqe_result_v3.sto3g-jordan_wigner-uccsd-statevector-cpu"


def test_object_key_is_the_sinks_key():
    """The sink's own format string (ObjectKeys.java) applied to the same values gives the same key."""
    java = (ROOT / "infra/connect/s3-avro-sink/src/main/java/io/qp/connect/s3/ObjectKeys.java").read_text()
    assert '"%syear=%04d/month=%02d/day=%02d/hour=%02d/%s+%d+%019d.avro"' in java
    when = datetime(2026, 1, 5, 7, 59, 59, tzinfo=UTC)
    # the Java format string itself, with Python's % (same directives)
    expected = "raw/topics/%s/year=%04d/month=%02d/day=%02d/hour=%02d/%s+%d+%019d.avro" % (  # noqa: UP031
        TOPIC, 2026, 1, 5, 7, TOPIC, 2, 1234567,
    )  # fmt: skip
    assert landing.object_key(TOPIC, 2, 1_234_567, when) == expected


def test_folders_are_the_utc_date_and_hour():
    """A time stamped in another zone lands in its UTC day and hour (23:30 at UTC-2 is 01:30 next day)."""
    when = datetime(2026, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-2)))
    key = landing.object_key(TOPIC, 0, 0, when.astimezone(UTC))
    assert "/year=2026/month=03/day=02/hour=01/" in key
    with pytest.raises(ValueError, match="has no timezone"):
        landing.object_key(TOPIC, 0, 0, datetime(2026, 3, 1, 23, 30))


def test_day_prefix_and_day_of_round_trip():
    day = date(2025, 12, 31)
    prefix = landing.day_prefix(TOPIC, day, "tests/abc/raw/topics")  # a missing trailing slash is added
    assert prefix == f"tests/abc/raw/topics/{TOPIC}/year=2025/month=12/day=31/"
    key = landing.object_key(TOPIC, 0, 9, datetime(2025, 12, 31, 23, tzinfo=UTC), "tests/abc/raw/topics/")
    assert key.startswith(prefix)
    assert landing.day_of(key) == day
    assert landing.day_of(f"s3a://bucket/{key}") == day
    assert landing.day_of("raw/topics/x/part-0.avro") is None
    assert re.search(landing.DAY_PATTERN, key)[0] == landing.day_suffix(day)


def test_topic_folders_listed_under_the_raw_prefix_with_or_without_its_slash():
    """One home for the topics folder: the sensor's listing and the key builders add the same slash."""
    from qp_assets.sensors.landing import list_topics

    class Listing:  # one delimiter listing of a bucket holding two topic folders
        def list_objects_v2(self, Bucket, Prefix, Delimiter):  # noqa: N803 - boto3's parameter names
            assert (Bucket, Prefix, Delimiter) == ("b", "tests/abc/raw/topics/", "/")
            return {"CommonPrefixes": [{"Prefix": f"{Prefix}{t}/"} for t in (TOPIC, "other")]}

    for raw_prefix in ("tests/abc/raw/topics", "tests/abc/raw/topics/"):
        assert landing.topics_folder(raw_prefix) == "tests/abc/raw/topics/"
        assert list_topics(Listing(), "b", raw_prefix) == sorted([TOPIC, "other"])
        assert landing.topic_prefix(TOPIC, raw_prefix) == f"tests/abc/raw/topics/{TOPIC}/"
