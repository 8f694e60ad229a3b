"""FEELVOS wiring: the maps the dynamic head sees are ``global_matching`` / ``local_matching`` of the head's own
embeddings against the first frame's classes and the previous frame's own prediction; background is a class
of the same head; padded objects get no probability; the core's state is flat in the number of frames and its
predictions are the training forward's."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import selfvos
from selfvos.heads.feelvos import FEELVOSInferenceCore, class_coverage, hard_masks
from selfvos.layers import global_matching, local_matching

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"feature_dim": 8, "low_dim": 4, "embedding_dim": 4, "head_dim": 8, "local_radius": 2}


def small_model():
    torch.manual_seed(0)
    return selfvos.create_model("feelvos", **SMALL).eval()


def grid_batch():
    """2 clips x 3 frames of 32x48 (a 4x6 grid at stride 8); labels constant on 8x8 cells, so the grid labels
    are ``masks[..., ::8, ::8]`` exactly. Item 1 has one object (object 2 padded); row 0 of the grid is void."""
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(2, 3, 32, 48, dtype=torch.int64)
    masks[:, :, 8:24, 0:16] = 1
    masks[0, :, 16:32, 24:48] = 2
    masks[:, 1:, 8:24, 8:24] = 1  # object 1 moves: later frames differ (never seen by the head)
    masks[:, :, 0:8] = 255
    return {"frames": torch.rand(2, 3, 3, 32, 48, generator=g), "masks": masks,
            "object_valid": torch.tensor([[True, True], [True, False]])}


def record_head(model):
    """Forward hook on the dynamic head: a list of (inputs, outputs) per call (one call per segmented frame)."""
    calls = []
    model.dynamic_head.register_forward_hook(lambda module, args, out: calls.append((args[0].detach(), out.detach())))
    return calls


def test_coverage_and_class_masks_of_a_label_map():
    ids = torch.full((1, 8, 8), 255)
    ids[0, :4, :4] = 0
    ids[0, :4, 4:] = 1
    ids[0, 4:, :4] = torch.tensor([[1, 1, 2, 2]] * 4)  # half object 1, half object 2: tie -> lower class
    cover = class_coverage(ids, 2, (2, 2))  # (1, 3, 2, 2); bottom-right cell is all void
    torch.testing.assert_close(cover[0, :, 0, 0], torch.tensor([1.0, 0, 0]))
    torch.testing.assert_close(cover[0, :, 1, 0], torch.tensor([0.0, 0.5, 0.5]))
    assert cover[0, :, 1, 1].sum() == 0
    masks = hard_masks(cover)[0]
    assert masks[:, 0, 0].tolist() == [True, False, False] and masks[:, 0, 1].tolist() == [False, True, False]
    assert masks[:, 1, 0].tolist() == [False, True, False] and not masks[:, 1, 1].any()


def test_dynamic_head_sees_global_and_local_matching_of_its_own_embeddings():
    model, batch = small_model(), grid_batch()
    calls = record_head(model)
    with torch.no_grad():
        model(batch)
        features, embeddings = model.encode(batch["frames"].flatten(0, 1))
    features = features.reshape(2, 3, *features.shape[1:])
    emb = embeddings.reshape(2, 3, *embeddings.shape[1:])
    assert emb.shape[-2:] == (4, 6) and len(calls) == 2
    grid_ids = batch["masks"][:, 0, ::8, ::8]
    first = torch.stack([grid_ids == c for c in range(3)], dim=1)  # (B, K+1, 4, 6): background is class 0
    assert not first[:, :, 0].any()  # the void row belongs to no class
    bi, ci = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 1, 2, 0, 1])  # item 1's object 2 is padded: not run
    previous_masks, previous_prob = first, first.float()  # frame 0: its ground truth
    for t, (inputs, out) in enumerate(calls, start=1):
        expected_global = global_matching(emb[:, t], emb[:, 0], first)
        expected_local = local_matching(emb[:, t], emb[:, t - 1], previous_masks, radii=(2,))[:, 0]
        assert inputs.shape == (5, 8 + 3, 4, 6)
        torch.testing.assert_close(inputs[:, :8], features[bi, t])
        torch.testing.assert_close(inputs[:, 8], expected_global[bi, ci])
        torch.testing.assert_close(inputs[:, 9], expected_local[bi, ci])
        torch.testing.assert_close(inputs[:, 10], previous_prob[bi, ci])
        # the next frame's previous = this frame's own prediction: softmax of the stacked logits, argmax mask
        logits = torch.full((2, 3, 4, 6), -1e4).index_put((bi, ci), out[:, 0])
        previous_prob = torch.softmax(logits, dim=1)
        previous_masks = torch.nn.functional.one_hot(previous_prob.argmax(1), 3).permute(0, 3, 1, 2).bool()


def test_background_is_a_class_of_the_shared_head_and_padded_objects_get_no_probability():
    model, batch = small_model(), grid_batch()
    calls = record_head(model)
    with torch.no_grad():
        out = model(batch)
    probs = torch.softmax(out["logits"], dim=2)  # (B, T-1, K+1, H, W)
    assert probs[1, :, 2].max() < 1e-6 and probs[0, :, 2].max() > 1e-3
    torch.testing.assert_close(probs.sum(dim=2), torch.ones(2, 2, 32, 48))
    # the background's logit is the shared head's output on the background's maps (class 0), upsampled
    inputs, head_out = calls[0]
    with torch.no_grad():
        background = model.dynamic_head(inputs[[0, 3]])[:, 0]  # rows (item 0, class 0), (item 1, class 0)
    grid_logits = torch.nn.functional.interpolate(head_out[[0, 3]], size=(32, 48), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out["logits"][:, 0, 0], grid_logits[:, 0])
    torch.testing.assert_close(head_out[[0, 3], 0], background)
    assert torch.all(out["logits"][1, :, 2] == -1e4)


def tensors_held(obj, seen=None):
    """(count, elements) of the tensors reachable from ``obj``'s attributes, tuples, lists and dicts (not the model)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, torch.nn.Module):
        return 0, 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return 1, obj.numel()
    items = (obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple))
             else vars(obj).values() if hasattr(obj, "__dict__") else ())
    counts = [tensors_held(x, seen) for x in items]
    return sum(c for c, _ in counts), sum(n for _, n in counts)


def test_core_state_is_flat_in_the_number_of_frames_and_the_first_frame_stays_the_reference():
    core = FEELVOSInferenceCore(small_model())
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (10, 30, 44, 3), dtype=np.uint8)  # padded to 32x48 inside
    mask = np.zeros((30, 44), np.uint8)
    mask[8:24, 0:16], mask[16:30, 24:44] = 3, 9
    core.step(frames[0], mask)
    first = core._first
    held = {}
    for t in range(1, 10):
        probs = core.step(frames[t])
        assert probs.shape == (3, 30, 44)
        held[t + 1] = tensors_held(core)
    assert held[3] == held[10] and core._first is first
    corrected = np.zeros_like(mask)
    corrected[0:8, 0:8] = 9
    probs = core.step(frames[0], corrected)  # a correction: returned as given, the previous frame from now on
    assert torch.equal(probs.argmax(0), torch.from_numpy(corrected == 9).long() * 2)
    assert core._first is first and tensors_held(core) == held[10]


def test_core_predicts_what_the_training_forward_predicts():
    model, batch = small_model(), grid_batch()
    frames = (batch["frames"][0] * 255).round().to(torch.uint8)  # item 0, exact in uint8
    clip = {"frames": frames[None].float() / 255, "masks": batch["masks"][:1], "object_valid": batch["object_valid"][:1]}
    with torch.no_grad():
        expected = torch.softmax(model(clip)["logits"][0], dim=1)  # (2, 3, H, W)
    core = FEELVOSInferenceCore(model)
    ids = batch["masks"][0, 0].numpy().astype(np.uint8) * 5 % 255  # ids 5 and 10, void stays 255 (255*5 % 255 = 0)
    ids[batch["masks"][0, 0].numpy() == 255] = 255
    core.step(frames[0].permute(1, 2, 0).numpy(), ids)
    assert core.object_ids == [5, 10]
    for t in (1, 2):
        torch.testing.assert_close(core.step(frames[t].permute(1, 2, 0).numpy()), expected[t - 1], rtol=1e-4, atol=1e-5)
