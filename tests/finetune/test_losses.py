"""The heads' losses against their formulas on hand-made inputs (lightly / solo-learn style)."""
from __future__ import annotations

import math

import pytest
import torch

from selfvos.finetune.losses import (LossConfig, SegmentationLoss, bootstrapped_cross_entropy,
                                     class_balanced_cross_entropy, cross_entropy, soft_iou_loss)


def pixel_ce(logits: torch.Tensor, target: torch.Tensor) -> list:
    """Per valid pixel -log softmax(logits)[target], computed by hand, image by image."""
    out = []
    for n in range(logits.shape[0]):
        per = []
        for y in range(logits.shape[2]):
            for x in range(logits.shape[3]):
                t = int(target[n, y, x])
                if t == 255:
                    continue
                z = logits[n, :, y, x].double()
                per.append(float(torch.logsumexp(z, 0) - z[t]))
        out.append(per)
    return out


@pytest.fixture
def case():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=g)
    target = torch.randint(0, 3, (2, 4, 5), generator=g)
    target[0, 0, :3] = 255  # void
    return logits, target


def test_cross_entropy_ignores_void(case):
    logits, target = case
    values = [v for per in pixel_ce(logits, target) for v in per]
    assert float(cross_entropy(logits, target)) == pytest.approx(sum(values) / len(values), rel=1e-5)


@pytest.mark.parametrize("fraction", [0.15, 0.4, 1.0])
def test_bootstrapped_cross_entropy_is_the_mean_of_the_hardest_pixels(case, fraction):
    logits, target = case
    means = []
    for per in pixel_ce(logits, target):
        hardest = sorted(per, reverse=True)[: max(1, math.ceil(fraction * len(per)))]
        means.append(sum(hardest) / len(hardest))
    assert float(bootstrapped_cross_entropy(logits, target, fraction)) == pytest.approx(sum(means) / 2, rel=1e-5)


def test_class_balanced_cross_entropy_weighs_each_class_by_the_others_frequency(case):
    logits, target = case
    means = []
    for n, per in enumerate(pixel_ce(logits, target)):
        labels = [int(t) for t in target[n].flatten() if int(t) != 255]
        frequency = {c: labels.count(c) / len(labels) for c in set(labels)}
        means.append(sum((1 - frequency[c]) * v for c, v in zip(labels, per)) / len(labels))
    assert float(class_balanced_cross_entropy(logits, target)) == pytest.approx(sum(means) / 2, rel=1e-5)


def test_class_balanced_binary_is_the_osvos_weighting():
    # 1 foreground pixel of 4: its loss weighs 3/4, each background pixel 1/4; predicting the prior is not a minimum
    logits = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[1, 0], [0, 0]]])
    expected = (0.75 * math.log(2) + 3 * 0.25 * math.log(2)) / 4
    assert float(class_balanced_cross_entropy(logits, target)) == pytest.approx(expected, rel=1e-6)
    loss = SegmentationLoss(LossConfig(class_balanced=True))
    assert float(loss.terms(logits[:, None], target[:, None])["ce"]) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="choose one"):
        LossConfig(class_balanced=True, bootstrap=0.15)


def test_soft_iou_loss_formula(case):
    logits, target = case
    probs = torch.softmax(logits.double(), dim=1)
    valid = target != 255
    losses = []
    for n in range(2):
        for k in (1, 2):
            p, y = probs[n, k][valid[n]], (target[n] == k)[valid[n]].double()
            losses.append(1 - float((p * y).sum() / (p + y - p * y).sum()))
    assert float(soft_iou_loss(logits, target)) == pytest.approx(sum(losses) / 4, rel=1e-5)
    only_first = torch.tensor([[True, False], [True, False]])
    assert float(soft_iou_loss(logits, target, only_first)) == pytest.approx((losses[0] + losses[2]) / 2, rel=1e-5)


def test_segmentation_loss_scores_the_predicted_frames(case):
    logits, target = case

    class Fixed(torch.nn.Module):
        def forward(self, batch):
            return {"logits": logits.view(1, 2, 3, 4, 5), "frames": torch.tensor([1, 2])}

    batch = {"masks": torch.cat([torch.zeros(1, 1, 4, 5, dtype=torch.long), target[None]], dim=1)}
    out = SegmentationLoss(LossConfig(ce=1.0, soft_iou=0.5))(Fixed(), batch)
    expected = float(cross_entropy(logits, target)) + 0.5 * float(soft_iou_loss(logits, target))
    assert float(out["loss"]) == pytest.approx(expected, rel=1e-5) and set(out) == {"loss", "ce", "soft_iou"}
    with pytest.raises(ValueError, match="bootstrap"):
        LossConfig(bootstrap=1.5)


def test_auxiliary_prediction_adds_its_weighted_terms(case):
    logits, target = case
    aux = logits.flip(-1)

    class WithAux(torch.nn.Module):
        def forward(self, batch):
            return {"logits": logits.view(1, 2, 3, 4, 5), "aux_logits": aux.reshape(1, 2, 3, 4, 5),
                    "aux_weight": 0.25, "frames": torch.tensor([1, 2])}

    batch = {"masks": torch.cat([torch.zeros(1, 1, 4, 5, dtype=torch.long), target[None]], dim=1)}
    out = SegmentationLoss(LossConfig(ce=1.0))(WithAux(), batch)
    main, extra = float(cross_entropy(logits, target)), float(cross_entropy(aux, target))
    assert float(out["aux"]) == pytest.approx(extra, rel=1e-5)
    assert float(out["loss"]) == pytest.approx(main + 0.25 * extra, rel=1e-5)


def test_extra_loss_of_a_head_is_added_and_reported(case):
    logits, target = case
    stop_logits = torch.tensor([[-1.0, 0.5, 2.0]])
    stop_target = torch.tensor([[0.0, 1.0, 1.0]])

    class WithExtra(torch.nn.Module):
        def forward(self, batch):
            bce = torch.nn.functional.binary_cross_entropy_with_logits(stop_logits, stop_target)
            return {"logits": logits.view(1, 2, 3, 4, 5), "frames": torch.tensor([1, 2]), "extra_loss": 0.5 * bce}

    batch = {"masks": torch.cat([torch.zeros(1, 1, 4, 5, dtype=torch.long), target[None]], dim=1)}
    out = SegmentationLoss(LossConfig(ce=1.0))(WithExtra(), batch)
    # BCE by hand: -mean(y log sigma(s) + (1 - y) log(1 - sigma(s)))
    sigma = [1 / (1 + math.exp(-s)) for s in (-1.0, 0.5, 2.0)]
    bce = -(math.log(1 - sigma[0]) + math.log(sigma[1]) + math.log(sigma[2])) / 3
    assert float(out["extra"]) == pytest.approx(0.5 * bce, rel=1e-5)
    assert float(out["loss"]) == pytest.approx(float(cross_entropy(logits, target)) + 0.5 * bce, rel=1e-5)


def test_bootstrap_warmup_goes_from_all_pixels_to_the_hardest_fraction(case):
    logits, target = case

    class Fixed(torch.nn.Module):
        def forward(self, batch):
            return {"logits": logits.view(1, 2, 3, 4, 5), "frames": torch.tensor([1, 2])}

    class Trainer:
        class state:
            step = 0

    batch = {"masks": torch.cat([torch.zeros(1, 1, 4, 5, dtype=torch.long), target[None]], dim=1)}
    objective = SegmentationLoss(LossConfig(ce=1.0, bootstrap=0.2, bootstrap_warmup=100))
    for step, fraction in [(0, 1.0), (50, 0.6), (100, 0.2), (400, 0.2)]:
        Trainer.state.step = step
        objective.on_step_end(Trainer, {})
        assert objective.bootstrap_fraction == pytest.approx(fraction)
        expected = float(bootstrapped_cross_entropy(logits, target, fraction))
        assert float(objective(Fixed(), batch)["loss"]) == pytest.approx(expected, rel=1e-6)
    Trainer.state.step = 0
    objective.on_train_start(Trainer)  # a resumed run restarts the schedule at its own step
    assert objective.step == 0
    assert SegmentationLoss(LossConfig(bootstrap=0.2)).bootstrap_fraction == 0.2
    with pytest.raises(ValueError, match="bootstrap_warmup"):
        LossConfig(bootstrap=0.2, bootstrap_warmup=-1)
