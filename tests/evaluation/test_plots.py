"""The trade-off plot writes readable PNG and SVG files."""

import math

import matplotlib.image

from sgrec_jax.evaluation.plots import PlotPoint, tradeoff_plot


def test_tradeoff_plot_writes_png_and_svg(tmp_path):
    sweep = [PlotPoint(f"w={w}", 1.0 + w, 2.0 - w, 0.1, 0.05) for w in (0, 0.5, 1)]
    schemes = [PlotPoint("popo", 1.8, 1.7, 0.1, math.nan), PlotPoint("sft", 0.9, 1.5)]
    paths = tradeoff_plot(tmp_path / "tradeoff", sweep, schemes, xlabel="eCPM@10",
                          ylabel="semantic@10", title="test")
    assert paths == [str(tmp_path / "tradeoff.png"), str(tmp_path / "tradeoff.svg")]
    image = matplotlib.image.imread(paths[0])
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0  # something was drawn
    assert (tmp_path / "tradeoff.svg").read_text().lstrip().startswith("<?xml")
    assert not list(tmp_path.glob(".*tmp"))
