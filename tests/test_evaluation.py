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
    assert out["probe/top1"] > 97
    shuffled = linear_probe(x[:300], y[torch.randperm(300, generator=g)], x[300:], y[300:], 4, epochs=20, batch_size=32)
    assert shuffled["probe/top1"] < 60
    lars = linear_probe(x[:300], y[:300], x[300:], y[300:], 4, epochs=20, batch_size=32, optimizer="lars", lr=1.0)
    assert lars["probe/top1"] > 90
