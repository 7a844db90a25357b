"""Shared pytest fixtures.

``stack`` (session scope): brings the local service stack up (idempotent; starts only what is not
running) and returns the Settings clients should use. Tests that need it are marked
``@pytest.mark.services``.
"""

from __future__ import annotations

import os

import pytest

# The golden input replays fixed days of January 2026 (features.golden): the feature partitions must reach
# back to them. The product default is the first landed day (``first-landed``, qp_assets.settings.Env); set here
# before any test imports the definitions, and inherited by the daemons and Airflow the tests start.
os.environ.setdefault("QP_PARTITIONS_START", "2026-01-01")

from qp_assets.settings import Settings


@pytest.fixture(scope="session")
def stack() -> Settings:
    """The running local stack's Settings (fails the test with the stack's one-line error if it cannot start)."""
    from qp_assets.stack import StackError, ensure_up

    try:
        return ensure_up()
    except StackError as exc:
        pytest.fail(f"local stack not available: {exc}", pytrace=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the destructive stack restart tests (tests/test_stack_zz_*.py) after every other test."""
    destructive = [item for item in items if item.path.name.startswith("test_stack_zz_")]
    if destructive:
        others = [item for item in items if not item.path.name.startswith("test_stack_zz_")]
        items[:] = others + destructive


@pytest.fixture(autouse=True, scope="module")
def _stop_spark_after_module():
    """Stop the in-process Spark session after each test module.

    Frees the driver's heap between modules (Dagster runs and Airflow tasks start their own drivers) and
    makes each module start from the session configuration it asks for.
    """
    yield
    import sys

    if "pyspark" in sys.modules:
        from pyspark import SparkContext

        context = SparkContext._active_spark_context  # any thread's session, not only this thread's
        if context is not None:
            context.stop()
