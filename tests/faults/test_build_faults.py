"""Faults during a feature build (issue 14): S3 connection resets.

The build's Iceberg I/O goes to SeaweedFS through a loopback :class:`~tests.faults.tools.FaultProxy` (the
Spark Connect session's catalog gets the proxy as its S3 endpoint). A day 21 days back (no other case
builds it) gets two real requests and their landed results. The moment the build has committed to the
first of its nine tables (six not started yet, so data-file writes certainly hit the fault), the proxy
resets every S3 connection for ``RESET_S`` seconds. That outlasts the S3 client's retries (Iceberg S3FileIO
defaults, 6 attempts, spent within about 5 s here): a table write fails, the build fails with the S3
error, and its rollback gives every table the day's rows of before (no table keeps half a build; the
note on the error says so). The rebuild (what the feature asset's retry policy runs) then writes exact
rows. Recovery = resets stop -> day rebuilt.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import timedelta

import pytest

from qp_assets.features.build import build_day, ensure_tables
from tests.faults import flow
from tests.faults.tools import (
    ROWS_PER_RESULT,
    FaultProxy,
    expect,
    on_commits,
    own_spark_session,
    rows_of_prefix,
)

pytestmark = [pytest.mark.faults, pytest.mark.services, pytest.mark.spark, pytest.mark.slow,
              pytest.mark.timeout(300)]  # fmt: skip
RESET_S = 8.0


def test_s3_connection_resets_during_a_feature_build(stack) -> None:
    settings = stack
    prefix = flow.new_prefix("s3reset")
    day = flow.today() - timedelta(days=21)
    n = 2
    flow.land_results_on(settings, prefix, day, n)
    proxy, url = FaultProxy.for_url(settings.s3_endpoint_url, max_lifetime_s=240)
    proxied = dataclasses.replace(settings, s3_endpoint_url=url)
    lifted = threading.Event()

    def resets() -> None:
        proxy.set_mode("reset")
        threading.Timer(RESET_S, lambda: (proxy.set_mode("forward"), lifted.set())).start()

    with proxy, own_spark_session(proxied) as spark:
        ensure_tables(spark, settings.iceberg_catalog_name)  # table creations are not the commits watched
        watch = on_commits(settings, 1, resets)
        with pytest.raises(Exception, match="Connection reset") as failed:
            build_day(day, spark, proxied, run_id=f"{prefix}build1")
        assert watch.fired, "the build failed before its first commit"
        notes = getattr(failed.value, "__notes__", [])
        assert notes and "restored to their rows before this build" in notes[0], notes
        assert lifted.wait(RESET_S)
        t0 = time.monotonic()
        assert rows_of_prefix(settings, day, prefix) == {t: 0 for t in ROWS_PER_RESULT}  # rolled back
        result = build_day(day, spark, proxied, run_id=f"{prefix}build2")
        recovery = flow.monotonic_since(t0)
    assert result.runs >= n
    assert rows_of_prefix(settings, day, prefix) == {t: n * k for t, k in ROWS_PER_RESULT.items()}
    expect(f"S3 connection resets {RESET_S:.0f} s during a feature build", prefix, day,
           {"requests": n, "ok_row": n, "iceberg_rows": n, "result_messages": n}, recovery, settings,
           "build failed after its first commit, rolled back; "
           "recovery = resets stop -> rebuilt", built=True)  # fmt: skip
