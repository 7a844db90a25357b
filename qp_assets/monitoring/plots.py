"""Convergence plot of a VQE run: total energy (hartree) per optimizer iteration with the exact reference.

Uses matplotlib's object API with the Agg canvas (no display, thread-safe use of pyplot avoided), so it
works inside Dagster ops and headless CI. The exact reference (FCI in the same active space) is drawn as
a dashed line with the chemical-accuracy band (1.6 mHa); the final error vs exact is annotated.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from qp_assets.vqe.result import as_record

CHEMICAL_ACCURACY_HA = 1.6e-3


def convergence_figure(result: Any) -> Figure:
    """Figure: energy per iteration (and running minimum), HF and exact reference lines, error annotation.

    ``result``: VQEResult or its record dict. Raises ValueError if the run has no iterations.
    """
    rec = as_record(result)
    iterations = rec.get("iterations") or []
    if not iterations:
        raise ValueError(f"result {rec.get('run_id')!r}: field 'iterations' is empty, nothing to plot")
    xs = [int(it["iteration"]) for it in iterations]
    energies = [float(it["energy"]) for it in iterations]
    running_min = [
        float(it.get("cumulative_min_energy", e)) for it, e in zip(iterations, energies, strict=True)
    ]
    refs = rec.get("reference_energies") or {}
    exact = refs.get("exact")
    hf = refs.get("hf")

    fig = Figure(figsize=(8.0, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(xs, energies, marker="o", markersize=3, linewidth=1.2, label="VQE energy")
    if running_min != energies:
        ax.plot(xs, running_min, linewidth=1.0, linestyle="-.", label="running minimum")
    if hf is not None:
        ax.axhline(
            float(hf), color="tab:gray", linestyle=":", linewidth=1.0, label=f"Hartree-Fock {hf:.6f} Ha"
        )
    if exact is not None:
        ax.axhline(
            float(exact), color="tab:red", linestyle="--", linewidth=1.2, label=f"exact {exact:.6f} Ha"
        )
        ax.axhspan(float(exact), float(exact) + CHEMICAL_ACCURACY_HA, color="tab:green", alpha=0.15,
                   label="chemical accuracy (1.6 mHa)")  # fmt: skip
    final = float(rec["total_energy"])
    error = rec.get("error_vs_exact_mha")
    text = f"final {final:.8f} Ha"
    if error is not None:
        text += f"\nerror vs exact {float(error):.4f} mHa"
    ax.annotate(
        text,
        xy=(xs[-1], energies[-1]),
        xytext=(0.97, 0.55),
        textcoords="axes fraction",
        ha="right",
        va="top",
        fontsize=9,
        bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85},
        arrowprops={"arrowstyle": "->", "color": "0.3"},
    )
    molecule = (rec.get("molecule") or {}).get("name", "?")
    ansatz = (rec.get("ansatz") or {}).get("name", "?")
    optimizer = (rec.get("optimizer") or {}).get("name", "?")
    backend = rec.get("backend") or {}
    ax.set_title(
        f"{molecule} / {rec.get('basis', '?')}: {ansatz}, {optimizer}, "
        f"{backend.get('method', '?')} on {backend.get('device_used', '?')}"
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimizer iteration")
    ax.set_ylabel("total energy (hartree)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    ax.ticklabel_format(axis="y", useOffset=False)
    # Fixed margins for this fixed size and these labels, instead of tight_layout, which lays the whole
    # figure out once more (text extents) on every plot: one plot per VQE run, inside the run's step.
    fig.subplots_adjust(left=0.135, right=0.98, bottom=0.11, top=0.92)
    return fig


def convergence_plot_png_bytes(result: Any, *, dpi: int = 100) -> bytes:
    """PNG bytes of :func:`convergence_figure`."""
    fig = convergence_figure(result)
    buffer = io.BytesIO()
    # zlib level 1: a few percent larger than the default level 6, several times faster to encode
    fig.savefig(buffer, format="png", dpi=dpi, pil_kwargs={"compress_level": 1})
    return buffer.getvalue()


def save_convergence_plot(result: Any, path: str | Path) -> Path:
    """Write the convergence plot to ``path`` (format from the suffix: .png, .svg, .pdf); returns the path."""
    target = Path(path)
    if target.suffix.lower() not in {".png", ".svg", ".pdf"}:
        raise ValueError(f"plot path {str(path)!r}: suffix must be .png, .svg or .pdf")
    target.parent.mkdir(parents=True, exist_ok=True)
    convergence_figure(result).savefig(target)
    return target


def pes_figure(scan: Mapping[str, Any]) -> Figure:
    """Potential-energy surface of a scan (``run_scan``'s dict): VQE total energy (hartree) against the
    stretched distance (angstrom), the exact energies when known, and the error vs exact (mHa) below."""
    points = scan["points"]
    distances = [p["distance"] for p in points]
    fig = Figure(figsize=(7.5, 6.0), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot(distances, [p["total_energy"] for p in points], "o-", label="VQE", color="tab:blue")
    if all(p.get("exact_energy") is not None for p in points):
        top.plot(distances, [p["exact_energy"] for p in points], "--", label="exact (FCI)", color="black")
        bottom.plot(distances, [p["error_vs_exact_mha"] for p in points], "o-", color="tab:red")
        bottom.axhline(CHEMICAL_ACCURACY_HA * 1000, linestyle=":", color="gray", label="chemical accuracy")
        bottom.legend(loc="upper right", fontsize="small")
    i, j = scan["stretch"]
    top.set_title(f"{scan['molecule']}: potential-energy scan of atoms {i}-{j} ({len(points)} points)")
    top.set_ylabel("total energy (Ha)")
    top.legend(loc="best")
    bottom.set_xlabel(f"distance {i}-{j} (angstrom)")
    bottom.set_ylabel("error (mHa)")
    return fig


def pes_plot_png_bytes(scan: Mapping[str, Any], *, dpi: int = 100) -> bytes:
    """PNG bytes of :func:`pes_figure`."""
    buffer = io.BytesIO()
    pes_figure(scan).savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
