"""run_vqe: one VQE simulation end to end (work in progress)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qp_assets.vqe.config import VQEConfig
from qp_assets.vqe.molecule import Molecule
from qp_assets.vqe.result import VQEResult


def run_vqe(
    molecule: Molecule,
    config: VQEConfig,
    *,
    request_id: str | None = None,
    progress: bool = True,
    on_iteration: Callable[[dict[str, Any]], None] | None = None,
    performance_snapshots_provider: Callable[[], list[dict[str, Any]]] | None = None,
) -> VQEResult:
    raise NotImplementedError
