"""Online fine-tuning on the given frames (selfvos.inference.online): the input model is never modified, the
loss falls on a real DAVIS first frame for MuG and STM, a seed fixes the weights, the MuG loss is label
propagation computed by hand, clip batches keep ids, unsupported models and non-finite weights are refused."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from selfvos.errors import NonFiniteWeightsError
from selfvos.inference.label_free import mug_online_loss, propagation_loss
from tests.conftest import shared_path
from selfvos.inference.one_shot import OneShotConfig
from selfvos.inference.online import (
    OnlineFinetuneConfig,
    clip_batch,
    finetune_on_frames,
    online_loss,
    run_online_finetune,
)
from selfvos.registry import ONLINE_LOSSES, create_model

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"short_side": 64, "crop": None, "batch": 2}  # 64 x 112 views of a 854 x 480 frame


@pytest.fixture(scope="module")
def davis_frame():
    """The first frame of DAVIS-2016 val ``blackswan`` (480, 854, 3) uint8 and its human mask as ids 0 / 1."""
    root = shared_path("davis2016-val-dev")
    frame = np.asarray(Image.open(root / "JPEGImages" / "480p" / "blackswan" / "00000.jpg").convert("RGB"))
    mask = (np.asarray(Image.open(root / "Annotations" / "480p" / "blackswan" / "00000.png")) > 0).astype(np.uint8)
    return frame, mask


def small_mug():
    torch.manual_seed(0)
    return create_model("mug").eval()


def small_stm():
    torch.manual_seed(0)
    return create_model("stm", key_dim=8, value_dim=16, decoder_dim=16).eval()


def synthetic_frame(h: int = 48, w: int = 64):
    """A textured frame with two squares, ids 3 and 7 (non-contiguous), and a void (255) strip."""
    rng = np.random.default_rng(0)
    frame = (rng.random((h, w, 3)) * 80).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    frame[8:24, 8:24], mask[8:24, 8:24] = (240, 40, 40), 3
    frame[20:40, 36:56], mask[20:40, 36:56] = (40, 40, 240), 7
    mask[:, :2] = 255
    return frame, mask


def state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fixed_loss(model, frame, mask, cfg) -> float:
    """The online loss on one fixed batch of clips (seed apart from the training seeds)."""
    batch = clip_batch([frame], [mask], cfg, np.random.default_rng(12345))
    with torch.no_grad():
        return float(online_loss(model, batch, cfg.loss_options))


def test_both_architectures_are_registered():
    assert {"mug", "stm"} <= set(ONLINE_LOSSES.names())


def test_input_model_is_unchanged_and_the_copy_is_trained():
    model = small_mug()
    before = state(model)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    frame, mask = synthetic_frame()
    cfg = OnlineFinetuneConfig(steps=2, lr=1e-2, parameters=("backbone.layer3",), short_side=48, crop=None)
    with torch.inference_mode():  # as inside a Segmenter / benchmark loop
        tuned = finetune_on_frames(model, [frame], [mask], cfg)
    assert tuned is not model and not tuned.training and not model.training
    after = state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # bitwise
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert {n: p.requires_grad for n, p in tuned.named_parameters()} == flags
    new = state(tuned)
    changed = {k for k in before if not torch.equal(before[k], new[k])}
    assert changed and all(k.startswith("backbone.layer3") for k in changed)  # only the chosen parameters
    assert not any(p.is_inference() for p in tuned.parameters())


def test_zero_steps_is_an_identical_copy():
    model = small_mug()
    tuned = finetune_on_frames(model, [synthetic_frame()[0]], [synthetic_frame()[1]], OnlineFinetuneConfig(steps=0))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), tuned.state_dict().values()))


@pytest.mark.parametrize("make, lr", [(small_mug, 1e-3), (small_stm, 1e-3)], ids=["mug", "stm"])
def test_loss_falls_on_a_davis_first_frame(davis_frame, make, lr):
    frame, mask = davis_frame
    model = make()
    cfg = OnlineFinetuneConfig(steps=8, lr=lr, parameters=("backbone.layer3", "backbone.layer2"), **TINY)
    start = fixed_loss(model, frame, mask, cfg)
    result = run_online_finetune(model, [frame], [mask], cfg)
    end = fixed_loss(result.model, frame, mask, cfg)
    assert result.skipped == 0 and len(result.losses) == 8 and all(map(math.isfinite, result.losses))
    assert end < 0.85 * start, (start, end, result.losses)
    assert fixed_loss(model, frame, mask, cfg) == start  # the input model still gives the same loss


def test_same_seed_same_weights_other_seed_other_weights():
    model = small_mug()
    frame, mask = synthetic_frame()
    cfg = OnlineFinetuneConfig(steps=2, lr=1e-2, short_side=48, crop=32, seed=3)
    a, b = (finetune_on_frames(model, [frame], [mask], cfg).state_dict() for _ in range(2))
    c = finetune_on_frames(model, [frame], [mask], OnlineFinetuneConfig(steps=2, lr=1e-2, short_side=48, crop=32,
                                                                        seed=4)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_unknown_architecture_is_a_clear_error():
    frame, mask = synthetic_frame()
    with pytest.raises(ValueError, match=r"architecture 'resnet'; supported: .*mug.*stm"):
        finetune_on_frames(create_model("resnet"), [frame], [mask])


def test_no_object_and_no_parameter_are_errors():
    frame, mask = synthetic_frame()
    with pytest.raises(ValueError, match="no object"):
        finetune_on_frames(small_mug(), [frame], [np.where(mask == 255, 255, 0).astype(np.uint8)])
    with pytest.raises(ValueError, match="no parameter name starts with"):
        finetune_on_frames(small_mug(), [frame], [mask], OnlineFinetuneConfig(steps=1, parameters=("decoder",)))


def test_non_finite_weights_are_refused():
    model = small_mug()
    with torch.no_grad():
        model.mask_head.weight[0, 0] = float("nan")  # not used by the loss: training runs, the result is refused
    frame, mask = synthetic_frame()
    with pytest.raises(NonFiniteWeightsError, match="mask_head.weight"):
        finetune_on_frames(model, [frame], [mask], OnlineFinetuneConfig(steps=1, short_side=48, crop=None))


def test_clip_batch_keeps_ids_and_voids_objects_missing_from_the_reference_view():
    frame, mask = synthetic_frame()
    cfg = OnlineFinetuneConfig(batch=6, num_frames=3, short_side=48, crop=32)
    batch = clip_batch([frame, frame], [mask, np.where(mask == 7, 0, mask).astype(np.uint8)], cfg,
                       np.random.default_rng(0))
    assert batch["frames"].shape == (6, 3, 3, 32, 32) and batch["masks"].shape == (6, 3, 32, 32)
    assert set(batch["masks"].unique().tolist()) <= {0, 1, 2, 255}  # ids 3, 7 -> 1, 2
    for clip, valid in zip(batch["masks"], batch["object_valid"]):
        assert valid.tolist() == [bool((clip[0] == k).any()) for k in (1, 2)]
        for k in (1, 2):
            if not valid[k - 1]:
                assert not (clip == k).any()  # void in the other views
    assert not batch["object_valid"].all()  # some clip lacks an object (the second mask has no id 7)


def hand_loss(reference, labels, query, target, temperature, k, radius):
    """Label propagation cross-entropy by explicit loops: reference / query (C, h, w), labels (L, h, w), target
    (h, w) ids (255 ignored), square window of ``radius`` cells."""
    _, h, w = query.shape
    total, count = 0.0, 0
    for y in range(h):
        for x in range(w):
            if target[y, x] == 255:
                continue
            cells = [(sum(query[:, y, x] * reference[:, v, u]), v, u) for v in range(h) for u in range(w)
                     if abs(v - y) <= radius and abs(u - x) <= radius]
            best = sorted(cells, key=lambda c: -c[0])[:k]
            exps = [math.exp(a / temperature) for a, _, _ in best]
            prob = sum(e * labels[target[y, x], v, u] for e, (_, v, u) in zip(exps, best)) / sum(exps)
            total -= math.log(max(prob, 1e-6))
            count += 1
    return total / count


def tiny_example():
    g = torch.Generator().manual_seed(0)
    reference = F.normalize(torch.randn(3, 2, 3, generator=g), dim=0).double()
    query = F.normalize(torch.randn(3, 2, 3, generator=g), dim=0).double()
    labels = torch.softmax(torch.randn(2, 2, 3, generator=g) * 2, dim=0).double()
    target = torch.tensor([[0, 1, 1], [255, 0, 1]])
    return reference, labels, query, target


def test_propagation_loss_equals_hand_computation():
    reference, labels, query, target = tiny_example()
    got = propagation_loss(reference[None], labels[None], query[None], target[None], 0.5, 2, radius=1)
    expected = hand_loss(reference.numpy(), labels.numpy(), query.numpy(), target.numpy(), 0.5, 2, 1)
    assert float(got) == pytest.approx(expected, rel=1e-9)
    everywhere = propagation_loss(reference[None], labels[None], query[None], target[None], 0.5, 2, radius=None)
    assert float(everywhere) == pytest.approx(hand_loss(reference.numpy(), labels.numpy(), query.numpy(),
                                                        target.numpy(), 0.5, 2, 9), rel=1e-9)
    assert float(everywhere) != pytest.approx(expected, rel=1e-3)  # the window matters in this example


def test_mug_online_loss_equals_hand_computation():
    """The registered loss: view 0's one-hot mask (void as background) propagated to views 1 and 2 with the
    one-shot temperature / top-k and the radius scaled from short side 480 to the views' 240 (2 -> 1)."""
    reference, _, query, target = tiny_example()
    second = torch.roll(query, 1, dims=2)
    features = torch.stack([reference, query, second])[None].float()  # (1, T=3, C, 2, 3)
    model = SimpleNamespace(encode=lambda frames: features)
    first = torch.tensor([[1, 255, 0], [0, 1, 1]])
    masks = torch.stack([first, target, target.flip(1)])[None]
    batch = {"frames": torch.zeros(1, 3, 3, 2, 3), "masks": masks, "object_valid": torch.ones(1, 1, dtype=torch.bool),
             "short_side": torch.tensor(240)}
    one_shot = OneShotConfig(temperature=0.5, topk=2, radius=2, short_side=480)
    got = mug_online_loss(model, batch, one_shot=one_shot)
    one_hot = np.stack([(first.numpy() != 1), (first.numpy() == 1)]).astype(np.float64)
    views = [(query, target), (second, target.flip(1))]
    per_view = [(hand_loss(reference.numpy(), one_hot, q.numpy(), t.numpy(), 0.5, 2, 1), int((t != 255).sum()))
                for q, t in views]
    expected = sum(loss * n for loss, n in per_view) / sum(n for _, n in per_view)  # mean over valid pixels
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_colour_jitter_changes_frames_not_geometry():
    frame, mask = synthetic_frame()
    plain = clip_batch([frame], [mask], OnlineFinetuneConfig(batch=1, short_side=48, crop=32), np.random.default_rng(5))
    jittered = clip_batch([frame], [mask], OnlineFinetuneConfig(batch=1, short_side=48, crop=32, jitter=0.4),
                          np.random.default_rng(5))
    assert torch.equal(plain["masks"], jittered["masks"])
    assert not torch.allclose(plain["frames"], jittered["frames"], atol=1e-2)
    assert 0.0 <= float(jittered["frames"].min()) and float(jittered["frames"].max()) <= 1.0


def test_run_variant_segments_each_video_with_its_own_fine_tuned_copy(tmp_path, monkeypatch):
    """The benchmark hook: ``model_for(video, first_mask)`` makes the model of each video (here the online copy)."""
    import selfvos.inference
    from selfvos.data.sources import open_source
    from selfvos.eval.runner import run_variant
    from selfvos.inference.io import write_masks

    collection = open_source("synthetic", num_videos=2, num_frames=4, size=(48, 64))
    for video in collection:
        write_masks(tmp_path / "gt" / video.name, video.frame_names, [video.mask(t) for t in range(len(video))])
    used = []

    class Recorder:
        def __init__(self, model, task, **settings):
            used.append(model)

        def segment_video(self, video, first_mask=None, progress=True):
            return [video.mask(t) for t in range(len(video))]

    monkeypatch.setattr(selfvos.inference, "Segmenter", Recorder)
    model, cfg = small_mug(), OnlineFinetuneConfig(steps=1, short_side=48, crop=None)

    def model_for(video, first):
        assert np.array_equal(first, np.where(video.mask(0) == 255, 0, video.mask(0)))
        return finetune_on_frames(model, [video.frame(0)], [first], cfg)

    scores = run_variant(model, collection, "one-shot", tmp_path / "pred", gt_dir=tmp_path / "gt", model_for=model_for)
    assert set(scores["model_for_s"]) == set(collection.names) and all(s > 0 for s in scores["model_for_s"].values())
    assert len(used) == 2 and used[0] is not used[1] and all(m is not model for m in used)
    assert scores["J&F"] == pytest.approx(100)
