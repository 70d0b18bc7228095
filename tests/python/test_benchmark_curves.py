"""The quality-per-minute figure of benchmarks/curves.py (docs/benchmarks.md): readable axes and
one legend for every marker."""

from __future__ import annotations

from conftest import load_benchmark


def _summary() -> dict:
    def panel(seconds: list[float], budget: float, lsi: float) -> dict:
        pts = [{"model": "default", "fraction": f, "seconds": s, "ari": 0.5 + 0.1 * i}
               for i, (f, s) in enumerate(zip((0.5, 1.0, 2.0), seconds))]
        pts.append({"model": "fc-l1", "fraction": 1.0, "seconds": seconds[1] / 3, "ari": 0.4})
        pts += [{"model": "lsi", "fraction": 1.0, "seconds": lsi, "ari": 0.45},
                {"model": "lsi-unscaled", "fraction": 1.0, "seconds": lsi, "ari": 0.44}]
        return {"points": pts, "budget_seconds": budget, "cells": 533, "bins": 25_000}

    # panels whose range holds one power of ten are where matplotlib labelled every minor tick
    # (Zeller's and Buenrostro's in docs/benchmarks.md)
    return {"datasets": {"zeller-like": panel([3.7, 6.4, 12.5], 12.0, 1.3),
                         "buenrostro-like": panel([9.8, 19.0, 38.0], 32.0, 1.6),
                         "wide": panel([36.0, 70.0, 140.0], 120.0, 0.9)}}


def _boxes_overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_curves_figure_tick_labels_do_not_overlap_and_one_legend_names_every_marker(tmp_path):
    curves = load_benchmark("curves")
    import matplotlib.pyplot as plt

    fig = curves.curves_figure(_summary())
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            if not ax.get_visible() or not ax.has_data():
                continue
            labels = [t for t in ax.get_xticklabels(which="both")
                      if t.get_visible() and t.get_text()
                      and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
            assert len(labels) >= 2, ax.get_title()
            boxes = [t.get_window_extent(renderer) for t in labels]
            for i in range(len(boxes)):
                for j in range(i + 1, len(boxes)):
                    assert not _boxes_overlap(boxes[i], boxes[j]), (
                        ax.get_title(), labels[i].get_text(), labels[j].get_text())
            assert ax.get_legend() is None  # no legend over a panel's points
        assert len(fig.legends) == 1
        texts = [t.get_text() for t in fig.legends[0].get_texts()]
        assert {"LSI (Signac)", "LSI unscaled", "FC-VAE (fc-l1)", "1 min / 1,000 cells"} <= set(texts)
        assert any(t.startswith("ConvNet-VAE") for t in texts)
    finally:
        plt.close(fig)
    out = tmp_path / "curves.png"
    curves.plot_curves(_summary(), out)
    assert out.stat().st_size > 10_000


def test_the_budget_line_is_the_schedule_s_budget_for_every_number_of_modalities():
    import convnetvae as cv

    curves = load_benchmark("curves")
    # 1 minute per 1,000 cells and modality, up to three: 2 modalities get 2 minutes (the line
    # was 3 for any number but one before)
    for mods, want in ((("ATAC",), 6.0), (("ATAC", "H3K27ac"), 12.0),
                       (("ATAC", "H3K27ac", "H3K27me3"), 18.0)):
        a = cv.simulate(n_cells=100, n_bins=200, modalities=mods, n_types=2, n_batches=1,
                        seed=0)
        entry = curves.run_curves("sim", a, "cell_type", None, [], [0], [], log=lambda _: None)
        assert entry["budget_seconds"] == want
        assert [p["model"] for p in entry["points"]] == ["lsi", "lsi-unscaled"]
