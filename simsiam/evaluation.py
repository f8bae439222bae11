"""Evaluation of a frozen backbone: weighted kNN monitor and linear probe.

kNN (Wu et al. 2018, as in the MoCo/SimSiam monitors): cosine similarity on l2-normalised
features, top-k neighbours vote with weight exp(sim / t); k=200, t=0.1.
Linear probe: one Linear layer on frozen features (backbone in eval mode), SGD or LARS with
cosine decay and no weight decay, as in the official main_lincls.py; features are extracted
once without augmentation, which makes the probe cheap enough to run after every pretraining.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from simsiam import metrics as M
from simsiam.optim import LARS, WarmupCosine, scaled_lr

STREAM_KNN_BANK = 10_000  # samples of a streamed version held for the kNN bank (monitor and final)


@torch.no_grad()
def extract_features(backbone: nn.Module, source, transform: Callable, indices: torch.Tensor | None = None,
                     batch_size: int = 512, device: str | torch.device = "cpu",
                     progress: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features (not normalised) and labels for `source[indices]`, backbone in eval mode."""
    was_training = backbone.training
    backbone.eval()
    idx = indices if indices is not None else torch.arange(len(source))
    feats, labels = [], []
    chunks = range(0, len(idx), batch_size)
    for start in (progress(chunks) if progress else chunks):
        batch = [source[int(i)] for i in idx[start:start + batch_size]]
        imgs = [img for img, _ in batch]
        if all(im.shape == imgs[0].shape for im in imgs):  # deterministic transform: one batched call
            x = transform(torch.stack(imgs))
        else:
            x = torch.stack([transform(im) for im in imgs])
        x = x.to(device)
        feats.append(backbone(x).float().cpu())
        labels.append(torch.tensor([y for _, y in batch]))
    backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def knn_predict(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                num_classes: int, k: int = 200, t: float = 0.1, chunk: int = 1024) -> torch.Tensor:
    bank = F.normalize(train_feats.float(), dim=1)
    k = min(k, len(bank))
    preds = []
    for start in range(0, len(test_feats), chunk):
        q = F.normalize(test_feats[start:start + chunk].float(), dim=1)
        sim, nn_idx = (q @ bank.T).topk(k, dim=1)
        weights = (sim / t).exp()
        votes = torch.zeros(len(q), num_classes).scatter_add_(1, train_labels[nn_idx], weights)
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


def knn_accuracy(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 test_labels: torch.Tensor, num_classes: int | None = None, k: int = 200, t: float = 0.1) -> float:
    """Top-1 accuracy in percent of the weighted kNN classifier."""
    n_cls = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    pred = knn_predict(train_feats, train_labels, test_feats, n_cls, k, t)
    return 100.0 * (pred == test_labels).float().mean().item()


def linear_probe(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 test_labels: torch.Tensor, num_classes: int | None = None, epochs: int = 100,
                 batch_size: int = 256, lr: float = 0.1, optimizer: str = "sgd", seed: int = 0,
                 device: str | torch.device = "cpu", keep: dict | None = None) -> dict[str, float]:
    """Train Linear(feat_dim, classes) on frozen features; returns test and train top-1, percent.

    Features are standardised with the training mean/std first: a fixed affine map the linear
    layer could learn itself, but without it SGD needs a per-backbone lr.
    """
    n_cls = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    mean, std = train_feats.mean(0), train_feats.std(0).clamp_min(1e-6)
    xtr = ((train_feats - mean) / std).to(device)
    xte = ((test_feats - mean) / std).to(device)
    ytr, yte = train_labels.to(device), test_labels.to(device)
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(xtr.shape[1], n_cls)
    nn.init.normal_(head.weight, std=0.01, generator=g)  # on CPU: the generator is a CPU one
    nn.init.zeros_(head.bias)
    head = head.to(device)
    init_lr = scaled_lr(lr, batch_size)
    if optimizer == "lars":
        opt: torch.optim.Optimizer = LARS(head.parameters(), lr=init_lr, weight_decay=0.0, momentum=0.9)
    else:
        opt = torch.optim.SGD(head.parameters(), lr=init_lr, momentum=0.9, weight_decay=0.0)
    steps_per_epoch = max(1, len(xtr) // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(epochs * steps_per_epoch))
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=g).to(device)
        for s in range(steps_per_epoch):
            b = perm[s * batch_size:(s + 1) * batch_size]
            loss = F.cross_entropy(head(xtr[b]), ytr[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        train_acc = (head(xtr).argmax(1) == ytr).float().mean().item()
        test_pred = head(xte).argmax(1)
        test_acc = (test_pred == yte).float().mean().item()
    if keep is not None:  # for the confusion-matrix figure
        keep["probe_pred"] = test_pred.cpu()
    return {"top1": 100.0 * test_acc, "train_top1": 100.0 * train_acc}


def features_for(backbone: nn.Module, cfg, source, indices: torch.Tensor | None = None,
                 device: str | torch.device = "cpu", progress: Callable | None = None):
    """Features of `source` under the config's deterministic eval transform, normalised with the
    training data's statistics (`data.norm`) whatever `source` is: the encoder's own input."""
    from simsiam.augment import eval_transform

    tf = eval_transform(cfg.data.recipe, cfg.data.norm, cfg.data.image_size, cfg.model.in_channels)
    return extract_features(backbone, source, tf, indices, cfg.eval.feature_batch_size, device, progress)


class KnnMonitor:
    """The kNN monitor during training: fixed seeded subsets of the train split (the memory bank)
    and the test split, chosen once per run so every epoch is measured on the same images."""

    def __init__(self, cfg, train_source, test_source) -> None:
        from simsiam.data import subset_indices

        self.cfg, self.train, self.test = cfg, train_source, test_source
        self.train_idx = subset_indices(len(train_source), cfg.eval.knn_train_samples, cfg.train.seed + 1)
        self.test_idx = subset_indices(len(test_source), cfg.eval.knn_test_samples, cfg.train.seed + 2)

    def __call__(self, backbone: nn.Module, device: str | torch.device = "cpu") -> float:
        ftr, ytr = features_for(backbone, self.cfg, self.train, self.train_idx, device)
        fte, yte = features_for(backbone, self.cfg, self.test, self.test_idx, device)
        return knn_accuracy(ftr, ytr, fte, yte, len(self.train.classes), self.cfg.eval.knn_k, self.cfg.eval.knn_t)


def _data_label(source) -> str:
    """A staged version by its name@version; local files by dataset name (their split is fixed)."""
    ref = getattr(source, "ref", None)  # StagedSource
    return f"{ref.name}@{ref.version}" if ref is not None else f"local {source.name}"


def eval_set(cfg, train_source, test_source, amp: str = "none") -> dict[str, str]:
    """What a probe number was measured on, as MLflow tags. `eval.set` is what the gate compares:
    the probe's training data and size, the test data and size, its epochs and, when not fp32, the
    features' precision (the seed is kept apart: versions trained with different seeds are meant
    to be compared)."""
    n_train = len(_probe_indices(cfg, train_source))
    of = f"{n_train} images" if n_train == len(train_source) else f"{n_train} of {len(train_source)} images"
    label = (f"probe trained on {_data_label(train_source)} ({of}, "
             f"{cfg.eval.probe_epochs} epochs), tested on {_data_label(test_source)} ({len(test_source)} images)"
             + (f", {amp} features" if amp != "none" else ""))
    return {"eval.set": label, "eval.seed": str(cfg.train.seed), "eval.test_images": str(len(test_source)),
            "eval.train_images": str(n_train)}


def _probe_indices(cfg, train_source) -> torch.Tensor:
    """The train images the final kNN bank and probe use: one fixed sample (seed 0, not the run's),
    so runs with different seeds are measured on the same images."""
    from simsiam.data import subset_indices

    return subset_indices(len(train_source), cfg.eval.probe_train_samples, 0)


def evaluate_backbone(backbone: nn.Module, cfg, train_source, test_source, device: str | torch.device = "cpu",
                      progress: Callable | None = None, keep: dict | None = None,
                      amp: str = "none") -> dict[str, float]:
    """kNN (k, t from cfg.eval) and linear probe on the full test split, fit on the train split (or
    its `eval.probe_train_samples` sample): `knn/final_top1`, `probe/top1`, `probe/train_top1`.
    `amp`: the features' autocast (the kNN and the probe run in fp32 on them).
    `keep` (a dict) receives the features, labels and probe predictions, for the figures."""
    from simsiam.runtime import autocast

    with autocast(torch.device(device), amp):
        ftr, ytr = features_for(backbone, cfg, train_source, _probe_indices(cfg, train_source), device, progress)
        fte, yte = features_for(backbone, cfg, test_source, None, device, progress)
    if keep is not None:
        keep.update(train=(ftr, ytr), test=(fte, yte))
    n_cls = len(train_source.classes) or None
    out = {M.KNN_FINAL: knn_accuracy(ftr, ytr, fte, yte, n_cls, cfg.eval.knn_k, cfg.eval.knn_t)}
    probe = linear_probe(ftr, ytr, fte, yte, n_cls, epochs=cfg.eval.probe_epochs, batch_size=cfg.eval.probe_batch_size,
                         lr=cfg.eval.probe_lr, optimizer=cfg.eval.probe_optimizer, seed=cfg.train.seed, device=device,
                         keep=keep)
    return {**out, M.PROBE: probe["top1"], M.PROBE_TRAIN: probe["train_top1"]}


def evaluate_after_training(backbone: nn.Module, cfg, train_source, test_source, device: torch.device,
                            keep: dict | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """The evaluation after training, the one the pipeline's evaluate step and a Ray trial both run:
    (metrics, eval set). The features are taken in the training's precision (`train.amp` resolved
    for `device`). A streamed training split (a ShardStream, too big to hold) gives a seeded sample
    of whole shards, as the kNN monitor's bank does."""
    from simsiam.runtime import resolve_precision
    from simsiam.streaming import ShardStream

    if isinstance(train_source, ShardStream):
        train_source = train_source.sample_source(cfg.eval.probe_train_samples or STREAM_KNN_BANK, 0)
    amp = resolve_precision(cfg.train.amp, cfg.train.channels_last, device)[0]
    if keep is not None:
        keep["train_source"] = train_source  # the images the features in `keep` are of
    metrics = evaluate_backbone(backbone.to(device), cfg, train_source, test_source, device, keep=keep, amp=amp)
    return metrics, eval_set(cfg, train_source, test_source, amp)
