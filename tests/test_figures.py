"""The run's figures (issue #29 item 7), checked on the matplotlib objects built from tiny synthetic
inputs: no MLflow, no datasets."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from conftest import tiny_config  # noqa: E402
from simsiam.data import TensorSource  # noqa: E402

CLASSES = ["cat", "dog", "frog"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _luminance(colour) -> float:
    """WCAG relative luminance of a colour."""
    c = np.array(to_rgb(colour))
    c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2])


def _contrast(a, b) -> float:
    la, lb = sorted([_luminance(a), _luminance(b)])
    return (lb + 0.05) / (la + 0.05)


def _cell_colour(ax, i: int, j: int):
    """The colour the image in `ax` paints at cell (row i, column j); the axes' background where it is NaN."""
    im = ax.images[0]
    value = im.get_array()[i, j]
    if np.ma.is_masked(value) or np.isnan(value):
        return ax.get_facecolor()
    return im.cmap(im.norm(value))


def _source(n: int, labels: list[int], seed: int = 0) -> TensorSource:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)
    return TensorSource("fake", images, torch.tensor(labels), list(CLASSES))


def _neighbors(k: int = 3):
    from simsiam.tracking.eval_figures import neighbors_figure

    g = torch.Generator().manual_seed(1)
    train_src, test_src = _source(6, [0, 0, 1, 1, 2, 2]), _source(2, [0, 2], seed=1)
    ftr, fte = torch.randn(6, 5, generator=g), torch.randn(2, 5, generator=g)
    fig = neighbors_figure(train_src, test_src, (ftr, train_src.labels), (fte, test_src.labels), queries=2, k=k)
    sims = torch.nn.functional.normalize(fte, dim=1) @ torch.nn.functional.normalize(ftr, dim=1).T
    return fig, sims.topk(k, dim=1), train_src, test_src


def test_neighbors_figure_titles_each_query_with_its_class_name():
    k = 3
    fig, _, _, test_src = _neighbors(k)
    for r in range(2):
        title = fig.axes[r * (k + 1)].get_title()
        assert "query" in title and CLASSES[int(test_src.labels[r])] in title


def test_neighbors_figure_titles_each_neighbour_with_its_class_name_and_2_decimal_cosine_similarity():
    k = 3
    fig, (top_sims, top_idx), train_src, _ = _neighbors(k)
    for r in range(2):
        for c in range(k):
            title = fig.axes[r * (k + 1) + 1 + c].get_title()
            j = int(top_idx[r, c])
            assert title == f"{CLASSES[int(train_src.labels[j])]}\n{float(top_sims[r, c]):.2f}"


def test_neighbors_figure_frames_in_red_exactly_the_neighbours_of_another_class():
    k = 3
    fig, (_, top_idx), train_src, test_src = _neighbors(k)
    for r in range(2):
        for c in range(k):
            wrong = int(train_src.labels[int(top_idx[r, c])]) != int(test_src.labels[r])
            edge = fig.axes[r * (k + 1) + 1 + c].spines["top"].get_edgecolor()[:3]
            assert (edge == (1.0, 0.0, 0.0)) == wrong


def _confusion(n: int = 10):
    from simsiam.tracking.eval_figures import confusion_figure

    # Class 0: 6 of 10 right (a 0.60 cell: mid-blue, where black reads better than white), class 1 all right.
    y = torch.arange(n).repeat_interleave(10)
    pred = y.clone()
    pred[:4] = 1
    return confusion_figure(y, pred, [f"class {i}" for i in range(n)])


def test_confusion_figure_every_text_in_its_axes_is_at_least_8pt():
    ax = _confusion().axes[0]
    texts = [*ax.texts, *ax.get_xticklabels(), *ax.get_yticklabels(), ax.title, ax.xaxis.label, ax.yaxis.label]
    assert ax.texts and min(t.get_fontsize() for t in texts) >= 8


def test_confusion_figure_cell_text_fits_inside_its_cell_for_ten_classes():
    fig = _confusion(10)
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    for t in ax.texts:
        j, i = t.get_position()
        (x0, y0), (x1, y1) = ax.transData.transform([(j - 0.5, i + 0.5), (j + 0.5, i - 0.5)])
        box = t.get_window_extent(renderer)
        assert x0 <= box.x0 and box.x1 <= x1 and min(y0, y1) <= box.y0 and box.y1 <= max(y0, y1), t.get_text()


def test_confusion_figure_cell_text_colour_is_whichever_of_black_or_white_contrasts_more_with_the_cell():
    ax = _confusion().axes[0]
    assert {t.get_text() for t in ax.texts} >= {"0.60", "1.00", "0.40"}
    for t in ax.texts:
        j, i = (round(v) for v in t.get_position())
        cell = _cell_colour(ax, i, j)
        best = max(("black", "white"), key=lambda c: _contrast(c, cell))
        assert to_rgb(t.get_color()) == to_rgb(best), (t.get_text(), t.get_color())


def _sweep():
    from simsiam.tracking.figures import sweep_heatmap

    rows = [{"optim.base_lr": lr, "train.batch_size": b, "knn/best_top1": knn, "collapsed": col}
            for lr, b, knn, col in [(0.03, 128, 12.0, False), (0.1, 128, 88.0, True),
                                    (0.03, 256, None, True), (0.1, 256, 50.0, False)]]
    return sweep_heatmap(rows)


def test_sweep_heatmap_cell_text_is_white_on_dark_cells_and_black_on_light_cells():
    ax = _sweep().axes[0]
    colours = {t.get_text().split("\n")[0]: to_rgb(t.get_color()) for t in ax.texts}
    assert colours["12.00"] == to_rgb("white")  # low kNN: dark viridis purple
    assert colours["88.00"] == to_rgb("black")  # high kNN: light viridis yellow, even where it collapsed
    assert colours["-"] == to_rgb("black")  # no value: the white axes background
    for t in ax.texts:
        j, i = (round(v) for v in t.get_position())
        cell = _cell_colour(ax, i, j)
        assert to_rgb(t.get_color()) == to_rgb(max(("black", "white"), key=lambda c: _contrast(c, cell)))


def test_sweep_heatmap_has_a_colorbar_and_a_fixed_0_to_100_percent_colour_scale():
    fig = _sweep()
    im = fig.axes[0].images[0]
    assert im.colorbar is not None and im.colorbar.ax in fig.axes
    assert (im.norm.vmin, im.norm.vmax) == (0, 100)


def test_views_figure_first_row_is_labelled_original_and_shows_the_source_images():
    from simsiam.tracking.figures import views_figure

    g = torch.Generator().manual_seed(0)
    views = torch.rand(3, 2, 1, 8, 8, generator=g)
    originals = [torch.rand(1, 10 + i, 10, generator=g) for i in range(3)]  # at their own sizes
    fig = views_figure(views, originals)
    axes = np.array(fig.axes).reshape(3, 3)  # rows: original, view 1, view 2; one column per image
    assert [row[0].get_ylabel() for row in axes] == ["original", "view 1", "view 2"]
    for i in range(3):
        assert np.array_equal(axes[0][i].images[0].get_array(), originals[i][0].numpy())
        assert np.array_equal(axes[2][i].images[0].get_array(), views[i, 1, 0].numpy())


def test_preview_with_originals_returns_the_preview_views_and_their_source_images_in_0_1():
    from simsiam.augment import MultiView, train_transform
    from simsiam.batch_augment import BatchAugment
    from simsiam.batches import DeviceViews, preview, preview_with_originals
    from simsiam.data import ViewsDataset

    g = torch.Generator().manual_seed(0)
    src = TensorSource("fashion-mnist", torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8, generator=g),
                       torch.arange(6) % 3, list(CLASSES))
    indices = torch.tensor([4, 2, 0, 1])
    device = DeviceViews(src, indices, BatchAugment("grey", "fashion-mnist", 28, 1), 2, 0, torch.device("cpu"))
    workers = ViewsDataset(src, MultiView(train_transform("grey", "fashion-mnist", 28, 1), 2), indices, seed=0)
    for dataset in (device, workers):
        views, originals = preview_with_originals(dataset, n=3)
        assert torch.equal(views, preview(dataset, n=3)) and views.shape == (3, 2, 1, 28, 28)
        assert len(originals) == 3
        for k, o in zip(indices[:3].tolist(), originals):
            assert torch.allclose(o, src.images[k].float() / 255)


def test_knn_figure_epoch_axis_ticks_are_integers():
    from simsiam.tracking.figures import training_figures

    history = {"knn/top1": [(10, 20.0), (20, 31.5)], "train/epoch": [(10, 1.0), (20, 2.0)],
               "train/loss": [(s, -s / 20) for s in range(1, 21)]}
    fig = training_figures(history, tiny_config())["figures/knn.png"]
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
