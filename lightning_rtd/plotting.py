"""Figures of cross-barcodes (matplotlib is imported lazily)."""

from __future__ import annotations

from typing import Any

from lightning_rtd.barcode import CrossBarcode


def plot_barcode(barcode: CrossBarcode, *, title: str | None = None, ax: Any = None) -> Any:
    """Draw a cross-barcode as horizontal bars, longest on top.

    Args:
        barcode: the bars to draw.
        title: figure title; defaults to the RTD value and the number of bars.
        ax: a matplotlib ``Axes`` to draw into; a new figure is made when ``None``.

    Returns:
        The matplotlib ``Figure``.
    """
    import matplotlib

    if ax is None:
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    else:
        fig = ax.figure
    bars = barcode.bars[barcode.lengths.argsort()] if len(barcode) else barcode.bars
    for i, (birth, death) in enumerate(bars):
        ax.hlines(i, birth, death, color="tab:blue", linewidth=1.2)
    ax.set_xlabel("filtration value (multiples of the 0.9-quantile distance)")
    ax.set_ylabel("H1 bar")
    ax.set_yticks([])
    if title is None:
        title = f"cross-barcode: RTD = {barcode.total_persistence:.3f}, {len(barcode)} bars"
    ax.set_title(title)
    fig.tight_layout()
    return fig
