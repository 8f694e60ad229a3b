"""RVOS: the decoder against its concatenated-input equations, Hungarian matching, stop targets, the teacher-forcing
schedule, the zero-shot forward and both cores."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import selfvos
from selfvos.data.supervised import SupervisedClipConfig
from selfvos.errors import SelfvosInputError
from selfvos.finetune.config import head_clip_config, head_task
from selfvos.finetune.losses import LossConfig, SegmentationLoss
from selfvos.finetune.validation import match_instances
from selfvos.heads.rvos import RVOSConfig
from selfvos.heads.rvos_decoder import RVOSDecoder, hungarian_match, soft_iou_matrix, stop_targets
from selfvos.inference.core import create_core

SMALL = {"skip_dim": 8, "hidden": (8, 8, 8, 8)}


def batch(b: int = 2, t: int = 3, h: int = 64, w: int = 96) -> dict:
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(b, t, h, w, dtype=torch.int64)
    masks[:, :, 8:30, 10:40] = 1
    masks[0, :, 36:60, 50:90] = 2
    masks[:, :, 0:2] = 255
    return {"frames": torch.rand(b, t, 3, h, w, generator=g), "masks": masks,
            "object_valid": torch.tensor([[True, True], [True, False]])}


def concatenated_decoder(decoder, skips, count, masks, temporal):
    """The decoder's equations as written: per object i and scale k one ``ConvLSTMCell.forward`` on the
    concatenated input ``[skip | B(h_{i,k-1}) | S_i | h^{t-1}_{i,k}]`` (zeros for a missing temporal state) with
    the state ``(h, c)_{i-1,k}``."""
    spatial, logits, stops, hidden = None, [], [], []
    for i in range(count):
        states, above = [], None
        for k, (cell, skip) in enumerate(zip(decoder.cells, skips)):
            size = tuple(skip.shape[-2:])
            inputs = [skip]
            if above is not None:
                inputs.append(F.interpolate(above, size=size, mode="bilinear", align_corners=False))
            if masks is not None:
                inputs.append(F.interpolate(masks[:, i:i + 1], size=size, mode="area"))
            zeros = skip.new_zeros(skip.shape[0], cell.hidden, *size)
            inputs.append(temporal[k][:, i] if temporal is not None else zeros)
            states.append(cell(torch.cat(inputs, dim=1), None if spatial is None else spatial[k]))
            above = states[-1][0]
        spatial = states
        logits.append(decoder.predict(above)[:, 0])
        hidden.append([h for h, _ in states])
        if decoder.stop is not None:
            stops.append(decoder.stop(torch.cat([h.amax(dim=(-2, -1)) for h, _ in states], dim=1))[:, 0])
    maps = [torch.stack([h[k] for h in hidden], dim=1) for k in range(len(skips))]
    return torch.stack(logits, dim=1), torch.stack(stops, dim=1) if stops else None, maps


@pytest.mark.parametrize("one_shot", [True, False])
def test_decoder_equals_the_concatenated_input_equations(one_shot):
    # the gates computed part by part (shared skip term, batched mask + temporal terms, per-object recurrent term,
    # zero parts left out) equal the cell on the concatenated input: values and parameter gradients
    torch.manual_seed(0)
    decoder = RVOSDecoder(8, (8, 6, 6, 4), mask_input=one_shot, stop=not one_shot)
    skips = [torch.randn(2, 8, 2 * s, 3 * s) for s in (1, 2, 4, 8)]
    masks = torch.rand(2, 3, 32, 48) if one_shot else None
    results = []
    for run in (decoder, lambda *args: concatenated_decoder(decoder, *args)):
        decoder.zero_grad()
        first = run(skips, 3, masks, None)
        second = run(skips, 3, masks, first[2])  # the next frame reads the temporal states
        outputs = [*first[:2], *second[:2], *second[2]]
        weights = torch.Generator().manual_seed(1)  # the same positive weights for both runs
        total = sum((x * torch.rand(x.shape, generator=weights)).sum() for x in outputs if x is not None)
        total.backward()
        results.append((outputs, {n: p.grad.clone() for n, p in decoder.named_parameters() if p.grad is not None}))
    (split, split_grads), (reference, reference_grads) = results
    assert len(split) == len(reference) and split_grads.keys() == reference_grads.keys()
    for a, b in zip(split, reference):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for name, grad in split_grads.items():
        torch.testing.assert_close(grad, reference_grads[name], rtol=1e-4, atol=1e-5)


def test_mask_prior_starts_as_copying_each_objects_previous_mask():
    """mask_prior > 0: the untrained one-shot decoder returns each object's previous mask (at 1/4 resolution), the
    second object without the first one's cell state; 0 leaves the random initialisation."""
    torch.manual_seed(0)
    model = selfvos.create_model("rvos", mask_prior=4.0).eval()
    previous = torch.zeros(1, 2, 96, 160)
    previous[0, 0, 20:70, 40:100] = 1
    previous[0, 1, 30:60, 110:150] = 1
    with torch.no_grad():
        logits, _, _ = model.decode_frame(model.encode(torch.rand(1, 3, 96, 160)), 2, previous, None)
    truth = F.interpolate(previous, size=logits.shape[-2:], mode="area") > 0.5
    pred = logits > 0
    iou = (pred & truth).sum((-2, -1)) / (pred | truth).sum((-2, -1))
    assert iou.min() > 0.95, iou
    plain = selfvos.create_model("rvos", mask_prior=0.0)
    assert plain.decoder.predict.weight.abs().max() < 1.0  # default init: |w| <= 1 / sqrt(fan_in)


def test_hungarian_picks_the_best_permutation_of_a_hand_made_case():
    # 3 slots x 2 instances: greedy (slot 0 -> instance 0, 0.9) would total 1.0; the optimum 0.8 + 0.85 = 1.65
    iou = torch.tensor([[0.9, 0.8], [0.85, 0.1], [0.0, 0.05]])
    assert hungarian_match(iou).tolist() == [1, 0]
    # the same soft IoUs from maps: slot probabilities and instance masks over 2 frames of 1 x 4 pixels
    truth = torch.tensor([[[[1, 1, 0, 0]], [[1, 1, 0, 0]]], [[[0, 0, 1, 1]], [[0, 0, 1, 1]]]]).float()
    probs = torch.stack([truth[1] * 0.5, truth[0], torch.zeros_like(truth[0])])  # soft IoU 0.5 / 1 / 0 with the owner
    iou = soft_iou_matrix(probs, truth, torch.ones(2, 1, 4))
    torch.testing.assert_close(iou, torch.tensor([[0.0, 0.5], [1.0, 0.0], [0.0, 0.0]]))
    assert hungarian_match(iou).tolist() == [1, 0]
    assert hungarian_match(torch.rand(1, 3)).tolist().count(-1) == 2  # more instances than slots


def test_stop_target_is_one_from_slot_k_on():
    targets = stop_targets(torch.tensor([2, 0, 3]), 4)
    assert targets.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]]


def test_zero_shot_forward_permutes_slots_and_adds_the_stop_loss():
    torch.manual_seed(0)
    model = selfvos.create_model("rvos", mode="zero_shot", max_instances=3, **SMALL)
    data = batch()
    out = model(data)
    assert out["logits"].shape == (2, 3, 3, 64, 96) and torch.equal(out["frames"], torch.arange(3))
    assignment = out["assignment"]
    assert sorted(assignment[0].tolist()) == [0, 1] and assignment[1].tolist() == [0, -1]  # first K slots
    targets = stop_targets(data["object_valid"].sum(1), 3)[:, None].expand(2, 3, 3)
    bce = F.binary_cross_entropy_with_logits(out["stop_logits"], targets)
    torch.testing.assert_close(out["extra_loss"], bce)
    # channel k + 1 holds the matched slot's own foreground logit (soft aggregation keeps the object logits)
    with torch.no_grad():
        skips = [x.reshape(2, 3, *x.shape[1:]) for x in model.encode(data["frames"].flatten(0, 1))]
        temporal, slots = None, []
        for i in range(3):
            z, _, temporal = model.decode_frame([x[:, i] for x in skips], 3, None, temporal)
            slots.append(F.interpolate(z, size=(64, 96), mode="bilinear", align_corners=False))
        slots = torch.stack(slots, dim=1)
    for k in range(2):
        torch.testing.assert_close(out["logits"][0, :, k + 1].detach(), slots[0, :, int(assignment[0, k])])
    terms = SegmentationLoss(LossConfig(ce=1.0))(model, data)
    assert set(terms) >= {"loss", "ce", "extra"} and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    assert model.decoder.stop.weight.grad is not None and model.backbone.conv1.weight.grad is not None


def test_teacher_forcing_switches_after_n_calls_and_survives_save_load(tmp_path):
    torch.manual_seed(0)
    model = selfvos.create_model("rvos", teacher_forcing_steps=2, **SMALL).train()
    data = batch()
    other = dict(data, masks=data["masks"].clone())
    other["masks"][:, 1:] = 0  # different ground truth for frames > 0 only
    with torch.no_grad():
        forced = model(data)["logits"]
        forced_other = model(other)["logits"]
    assert int(model.train_calls) == 2
    assert torch.allclose(forced[:, 0], forced_other[:, 0])  # frame 1 reads frame 0's mask only
    assert not torch.allclose(forced[:, 1], forced_other[:, 1])  # frame 2 read the ground truth of frame 1
    with torch.no_grad():
        own = model(data)["logits"]
        own_other = model(other)["logits"]
    torch.testing.assert_close(own, own_other)  # after the switch: frames > 0's ground truth is never read
    assert int(model.train_calls) == 4
    model.save_pretrained(tmp_path / "ckpt")
    loaded = selfvos.from_pretrained(tmp_path / "ckpt").train()
    assert int(loaded.train_calls) == 4
    with torch.no_grad():
        torch.testing.assert_close(loaded(data)["logits"], loaded(other)["logits"])


def test_head_task_and_clips_follow_the_mode():
    zero, one = RVOSConfig(mode="zero_shot"), RVOSConfig()
    assert head_task(zero) == "zero-shot" and head_task(one) == "one-shot"
    clip = SupervisedClipConfig(max_objects=7)
    assert head_clip_config(zero, clip) == clip and not head_clip_config(zero, clip).binary  # instance ids kept
    with pytest.raises(ValueError, match="mode"):
        RVOSConfig(mode="both")


def video(length: int):
    from selfvos.data.video import InMemoryVideo, VideoSample

    frames = np.random.default_rng(0).integers(0, 255, (length, 50, 70, 3), dtype=np.uint8)
    return InMemoryVideo(VideoSample(frames=frames, frame_names=[f"{i:05d}" for i in range(length)], name="tiny"))


def test_zero_shot_core_yields_instance_ids_and_flat_state():
    torch.manual_seed(0)
    model = selfvos.create_model("rvos", mode="zero_shot", max_instances=3, **SMALL).eval()
    with pytest.raises(SelfvosInputError, match="zero-shot only"):
        create_core(model, "one-shot")
    core = create_core(model, "zero-shot", {"max_side": 64})
    with torch.no_grad():  # no slot stops: ids 1..3 (whichever win the pixels)
        model.decoder.stop.weight.zero_()
        model.decoder.stop.bias.fill_(-5.0)
    masks = list(core.segment_video(video(3)))
    assert len(masks) == 3 and all(m.shape == (50, 70) and m.dtype == np.uint8 for m in masks)
    assert set(np.unique(np.concatenate(masks))) <= {0, 1, 2, 3} and set(core.object_ids) <= {1, 2, 3}
    assert core.object_ids
    sizes = []
    for n in (2, 5):
        list(core.segment_video(video(n)))
        sizes.append(core.state_numel)
    assert sizes[0] == sizes[1] > 0
    with torch.no_grad():  # every slot stops: no instance
        model.decoder.stop.bias.fill_(5.0)
    assert all(not m.any() for m in core.segment_video(video(2))) and core.object_ids == []
    with pytest.raises(SelfvosInputError, match="whole videos"):
        core.step(np.zeros((50, 70, 3), np.uint8))


def test_one_shot_core_state_is_flat_in_the_frame_count():
    torch.manual_seed(0)
    model = selfvos.create_model("rvos", **SMALL).eval()
    core = create_core(model, "one-shot")
    frame = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    mask = np.zeros((50, 70), np.uint8)
    mask[5:20, 5:30], mask[30:45, 40:65] = 1, 3
    core.step(frame, mask)
    sizes = []
    for _ in range(4):
        probs = core.step(frame)
        sizes.append(core.state_numel)
    assert len(set(sizes)) == 1 and sizes[0] > 0 and probs.shape == (3, 50, 70)
    corrected = core.step(frame, mask)  # a correction is returned as given
    assert torch.equal(corrected.argmax(0), torch.from_numpy(np.select([mask == 1, mask == 3], [1, 2], 0)))


def test_zero_shot_instances_are_matched_to_the_ground_truth_for_validation():
    gt = [np.array([[1, 1, 2, 0]], np.uint8), np.array([[1, 1, 2, 255]], np.uint8)]
    pred = [np.array([[3, 3, 1, 1]], np.uint8), np.array([[3, 3, 1, 5]], np.uint8)]
    relabelled = match_instances(gt, pred)
    assert [r.tolist() for r in relabelled] == [[[1, 1, 2, 2]], [[1, 1, 2, 0]]]


@pytest.mark.parametrize("name, task, instances",
                         [("rvos_davis16", "one-shot", 3), ("rvos_zs_davis17", "zero-shot", 7)])
def test_recipes_load(name, task, instances):
    from selfvos.config import load_yaml
    from selfvos.finetune.config import FinetuneConfig

    cfg = load_yaml(FinetuneConfig, f"recipes/configs/finetune/{name}.yaml")
    assert head_task(cfg.model) == task and not cfg.data.clip.binary and cfg.data.clip.max_objects == instances
    assert cfg.model.max_instances > instances or task == "one-shot"
