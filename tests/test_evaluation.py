import torch

from simsiam.evaluation import knn_accuracy, knn_predict, linear_probe


def test_knn_toy_set_with_known_answer():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.2, 0.8]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    queries = torch.tensor([[1.0, 0.05], [0.05, 1.0]])
    # k=2: nearest neighbours of q0 are both class 0, of q1 both class 1.
    assert knn_predict(bank, labels, queries, 2, k=2, t=0.1).tolist() == [0, 1]
    assert knn_accuracy(bank, labels, queries, torch.tensor([0, 1]), 2, k=2) == 100.0


def test_knn_weighting_prefers_close_neighbours_over_majority():
    # With k=3 the query has one very close class-0 neighbour and two far class-1 ones.
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-0.1, 1.0]])
    labels = torch.tensor([0, 1, 1])
    q = torch.tensor([[1.0, 0.02]])
    assert knn_predict(bank, labels, q, 2, k=3, t=0.1).item() == 0  # exp(10) >> 2 * exp(~0.2)
    assert knn_predict(bank, labels, q, 2, k=3, t=100.0).item() == 1  # flat weights: majority wins


def test_linear_probe_separates_separable_data():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=g) * 4
    y = torch.arange(400) % 4
    x = centers[y] + torch.randn(400, 16, generator=g)
    out = linear_probe(x[:300], y[:300], x[300:], y[300:], 4, epochs=20, batch_size=32)
    assert out["top1"] > 97
    shuffled = linear_probe(x[:300], y[torch.randperm(300, generator=g)], x[300:], y[300:], 4, epochs=20, batch_size=32)
    assert shuffled["top1"] < 60
    lars = linear_probe(x[:300], y[:300], x[300:], y[300:], 4, epochs=20, batch_size=32, optimizer="lars", lr=1.0)
    assert lars["top1"] > 90


def test_evaluation_figures_show_what_their_titles_say(fmnist_test, tmp_path):
    from simsiam.tracking.eval_figures import confusion_figure, embedding_figure, neighbors_figure

    src = fmnist_test.subset(range(200))
    y = src.labels
    pred = y.clone()
    pred[:50] = (y[:50] + 1) % 10  # 50 of 200 wrong
    fig = confusion_figure(y, pred, src.classes)
    assert fig.axes[0].get_title() == "Linear probe: 75.00% top-1"
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    per_class = [(pred[y == c] == c).float().mean().item() * 100 for c in range(10)]
    assert ticks == [f"{name} ({acc:.0f}%)" for name, acc in zip(src.classes, per_class)]
    fig.savefig(tmp_path / "confusion.png")

    feats = src.images.flatten(1).float()  # pixels as features: neighbours of a train image are itself
    fig = neighbors_figure(src, src, (feats, y), (feats, y), queries=4, k=3)
    first = fig.axes[1]  # row 0, the first neighbour: the query image itself, same class
    assert (first.images[0].get_array() == src.images[0, 0].numpy()).all()
    assert first.spines["top"].get_edgecolor()[:3] != (1.0, 0.0, 0.0)
    fig = embedding_figure({"at init": (feats, y), "trained": (feats, y)}, src.classes)
    assert [a.get_title() for a in fig.axes] == [f"{s}: PCA of 200 train features" for s in ("at init", "trained")]
    fig.savefig(tmp_path / "embedding.png")


def test_sweep_heatmap_puts_each_trials_best_knn_in_its_cell_and_marks_collapse():
    from simsiam.tracking.figures import sweep_heatmap

    rows = [{"optim.base_lr": lr, "train.batch_size": b, "knn/best_top1": knn, "collapsed": col}
            for lr, b, knn, col in [(0.03, 128, 40.0, False), (0.03, 128, 45.5, False), (0.1, 128, 20.0, True),
                                    (0.03, 256, None, True), (0.1, 256, 50.25, False)]]
    fig = sweep_heatmap(rows)
    cells = {t.get_text() for t in fig.axes[0].texts}
    assert cells == {"45.50", "20.00\nX collapsed", "-\nX collapsed", "50.25"}
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0.03", "0.1"]
    assert sweep_heatmap([{"name": "baseline", "knn/best_top1": 1.0, "collapsed": False}]) is None  # no lr x batch


def test_probe_train_samples_fit_on_the_same_sample_whatever_the_seed_and_test_on_the_whole_split(fmnist_test):
    from conftest import tiny_config
    from simsiam.evaluation import evaluate_backbone
    from simsiam.models import build_model

    train_src, test_src = fmnist_test.subset(range(300)), fmnist_test.subset(range(300, 420))
    kept = []
    for seed in (0, 5):
        cfg = tiny_config("eval.probe_train_samples=100", "eval.probe_epochs=1", f"train.seed={seed}")
        keep: dict = {}
        evaluate_backbone(build_model(cfg.model).backbone, cfg, train_src, test_src, keep=keep)
        kept.append(keep)
    (f0, y0), (f5, y5) = kept[0]["train"], kept[1]["train"]
    assert len(y0) == 100 and torch.equal(y0, y5)  # one sample, not the run's seed's
    assert not torch.equal(f0, f5)  # two fresh backbones, the same images
    assert all(len(k["test"][1]) == 120 for k in kept)


def test_evaluation_with_bf16_features_gives_fp32_features_and_a_finite_knn_and_probe(fmnist_test):
    from conftest import tiny_config
    from simsiam.evaluation import evaluate_backbone
    from simsiam.models import build_model

    cfg = tiny_config("eval.probe_epochs=1")
    src = fmnist_test.subset(range(200))
    keep: dict = {}
    out = evaluate_backbone(build_model(cfg.model).backbone, cfg, src, src, keep=keep, amp="bf16")
    assert keep["train"][0].dtype == torch.float32  # extracted under autocast, handed on in fp32
    assert 0 <= out["knn/final_top1"] <= 100 and 0 <= out["probe/top1"] <= 100
