"""The one Dagster ``Definitions`` of the platform (loaded by workspace.yaml and ``-m qp_assets.definitions``)."""

from __future__ import annotations

from dagster import Definitions

defs = Definitions(assets=[], jobs=[], sensors=[], schedules=[], resources={})
