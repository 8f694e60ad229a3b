"""MaskTrack: the assignment score v, "new", the identity cross-entropy, one instance per identity, tracks through an
absent frame, the YouTube-VIS results, the instance sources and the recipe wiring."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import selfvos
from selfvos.data.video import InMemoryVideo, VideoCollection, VideoSample
from selfvos.errors import SelfvosInputError
from selfvos.eval.vis import check_results, davis_to_vis, evaluate_vis
from selfvos.finetune.losses import SegmentationLoss
from selfvos.heads.masktrack import (
    assign_identities,
    assignment_scores,
    box_iou,
    identity_logits,
    identity_loss,
    mask_boxes,
)
from selfvos.heads.vis_core import FrameInstances, GivenInstances, RVOSInstances, create_vis_core
from selfvos.inference.core import create_core

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = {"feature_dim": 8, "hidden": 16, "embed_dim": 8}


def tiny_video(absent: int = 2, frames: int = 4) -> tuple:
    """Random frames (T, 40, 60, 3) and id maps: object 1 still, object 2 moving right and absent at ``absent``."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (frames, 40, 60, 3), dtype=np.uint8)
    ids = np.zeros((frames, 40, 60), np.uint8)
    ids[:, 4:16, 4:20] = 1
    for t in range(frames):
        if t != absent:
            ids[t, 22:36, 30 + t:50 + t] = 2
    sample = VideoSample(frames=images, frame_names=[f"{t:05d}" for t in range(frames)], name="tiny", masks=ids)
    return InMemoryVideo(sample), ids


def test_assignment_score_matches_a_hand_computation():
    queries, memory = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    log_p = torch.log_softmax(identity_logits(queries, memory), dim=1)
    z = 2 + math.exp(2)  # both rows: logits [0 (new), 2, 0] and [0, 0, 2]
    torch.testing.assert_close(log_p, torch.tensor([[-math.log(z), 2 - math.log(z), -math.log(z)],
                                                    [-math.log(z), -math.log(z), 2 - math.log(z)]]))
    boxes, memory_boxes = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10]]), torch.tensor([[0.0, 0, 10, 10],
                                                                                          [20, 20, 30, 30]])
    ious = box_iou(boxes, memory_boxes)
    torch.testing.assert_close(ious, torch.tensor([[1.0, 0.0], [50 / 150, 0.0]]))
    same = torch.tensor([[True, False], [False, True]])
    scores = torch.tensor([0.9, 0.5])
    v = assignment_scores(log_p, scores, ious, same, alpha=1.0, beta=2.0, gamma=10.0)
    lz, a0, a1 = math.log(z), math.log(0.9), math.log(0.5)
    expected = [[-lz + a0 + 10, 2 - lz + a0 + 2 * 1.0 + 10, -lz + a0],
                [-lz + a1 + 10, -lz + a1 + 2 / 3, 2 - lz + a1 + 10]]
    torch.testing.assert_close(v, torch.tensor(expected))
    assert assign_identities(v).tolist() == [0, 1]


def test_new_is_chosen_for_an_empty_memory_or_when_every_p_is_small():
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    log_p = torch.log_softmax(identity_logits(queries, queries[:0]), dim=1)  # no memory: p(new) = 1
    assert log_p.shape == (2, 1) and torch.allclose(log_p, torch.zeros(2, 1))
    assert assign_identities(assignment_scores(log_p, torch.ones(2), torch.zeros(2, 0), torch.zeros(2, 0, dtype=bool),
                                               1.0, 2.0, 10.0)).tolist() == [-1, -1]
    same, no_overlap = torch.ones(2, 2, dtype=bool), torch.zeros(2, 2)
    far = torch.full((2, 2), -10.0)  # f_i . f_n = -10 for every pair: every p_i(n) ~ 4.5e-5
    v = assignment_scores(torch.log_softmax(identity_logits(queries, far), 1), torch.ones(2), no_overlap, same,
                          1.0, 2.0, 10.0)
    assert assign_identities(v).tolist() == [-1, -1]
    v = assignment_scores(torch.log_softmax(identity_logits(queries, 10 * queries), 1), torch.ones(2), no_overlap,
                          same, 1.0, 2.0, 10.0)
    assert assign_identities(v).tolist() == [0, 1]


def test_identity_cross_entropy_equals_the_formula():
    queries = torch.tensor([[1.0, 2.0], [0.5, -1.0], [0.0, 0.0]])
    memory = torch.tensor([[1.0, 1.0], [-1.0, 0.5]])
    targets = torch.tensor([1, 2, 0])
    expected = 0.0
    for f, y in zip(queries.tolist(), targets.tolist()):
        dots = [f[0] * m[0] + f[1] * m[1] for m in memory.tolist()]
        denominator = 1 + sum(math.exp(d) for d in dots)
        p = (1.0 if y == 0 else math.exp(dots[y - 1])) / denominator
        expected -= math.log(p) / 3
    assert identity_loss(queries, memory, targets).item() == pytest.approx(expected, rel=1e-6)


def test_forward_targets_and_loss_are_the_formula_on_its_own_embeddings():
    torch.manual_seed(0)
    model = selfvos.create_model("masktrack", categories=("a", "b"), class_weight=2.0, **SMALL).eval()
    masks = torch.zeros(1, 2, 32, 48, dtype=torch.long)
    masks[0, :, 2:12, 3:20] = 1
    masks[0, 1, 18:30, 25:40] = 2  # object 2 appears in frame 1: its target is "new"
    batch = {"frames": torch.rand(1, 2, 3, 32, 48), "masks": masks, "object_valid": torch.ones(1, 2, dtype=bool),
             "instance_classes": torch.tensor([[0, 1]])}
    out = model(batch)
    assert out["logits"].shape == (1, 0, 3, 32, 48) and out["identity_targets"].tolist() == [1, 0]
    inst = torch.stack([masks[0, 0] == 1, masks[0, 1] == 1, masks[0, 1] == 2])
    with torch.no_grad():
        emb, class_logits = model.embed(model.features(batch["frames"][0]), torch.tensor([0, 1, 1]),
                                        mask_boxes(inst), inst)
    identity = identity_loss(emb[1:], emb[:1], torch.tensor([1, 0]))
    classes = torch.nn.functional.cross_entropy(class_logits, torch.tensor([0, 0, 1]))
    torch.testing.assert_close(out["identity_loss"], identity)
    torch.testing.assert_close(out["extra_loss"], identity + 2.0 * classes)
    torch.testing.assert_close(SegmentationLoss()(model, batch)["loss"], out["extra_loss"])


def test_every_reference_dropped_makes_every_target_new():
    """memory_drop can drop all references of a clip: the identities are all "new" (0), not a crash."""
    torch.manual_seed(0)
    model = selfvos.create_model("masktrack", memory_drop=0.999, **SMALL).train()
    masks = torch.zeros(1, 2, 32, 48, dtype=torch.long)
    masks[0, :, 2:12, 3:20] = 1
    batch = {"frames": torch.rand(1, 2, 3, 32, 48), "masks": masks, "object_valid": torch.ones(1, 1, dtype=bool)}
    out = model(batch)
    assert out["identity_targets"].tolist() == [0] and torch.isfinite(out["extra_loss"])
    out["extra_loss"].backward()


def test_hungarian_gives_one_instance_per_identity():
    # both instances prefer identity 0; greedy would give it twice. Columns: new, identity 0, identity 1
    v = torch.tensor([[-1.0, 5.0, 0.0], [-1.0, 4.0, 3.0]])
    assert assign_identities(v).tolist() == [0, 1]
    v = torch.tensor([[-1.0, 5.0, -9.0], [2.0, 4.0, -9.0]])  # the second is better off new than on identity 1
    assert assign_identities(v).tolist() == [0, -1]
    choice = assign_identities(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)))
    kept = [c for c in choice.tolist() if c >= 0]
    assert len(kept) == len(set(kept)) <= 3


def test_tracks_survive_an_absent_frame_and_give_valid_results():
    torch.manual_seed(0)
    model = selfvos.create_model("masktrack", **SMALL)
    video, ids = tiny_video(absent=2)
    source = GivenInstances(list(ids), shuffle=True, box_jitter=0.05)
    core = create_vis_core(model, source, head={"beta": 50.0}, max_side=48)
    tracks = core.segment_video(video)
    assert [t.identity for t in tracks] == [1, 2] and core.object_ids == [1, 2]
    by_object = {int(ids[0][t.mask(0)][0]): t for t in tracks}
    assert by_object[2].present == [True, True, False, True]
    for obj, track in by_object.items():
        for t in range(len(video)):
            assert track.mask(t) is None or np.array_equal(track.mask(t), ids[t] == obj)
    assert by_object[1].score == pytest.approx(1.0) and by_object[1].category == 0
    gt = davis_to_vis(VideoCollection([video]))
    records = core.to_vis_results(1, tracks)
    assert check_results(records, gt) is records and [r["category_id"] for r in records] == [1, 1]
    assert evaluate_vis(gt, records).stats["AP"] == pytest.approx(1.0)
    # retain_frames 2: seen at frame 1, matched again at frame 3; absent at 2 and 3, back at 4: a new identity
    short = create_vis_core(model, source, head={"beta": 50.0, "retain_frames": 2}, max_side=48)
    assert [t.identity for t in short.segment_video(video)] == [1, 2]
    five, gap = tiny_video(absent=2, frames=5)
    gap[3, 22:36] = 0
    short = create_vis_core(model, GivenInstances(list(gap)), head={"beta": 50.0, "retain_frames": 2}, max_side=48)
    assert [t.identity for t in short.segment_video(five)] == [1, 2, 3]


def test_instance_sources_and_core_errors(tmp_path):
    from selfvos.data.writers import save_palette_png

    _, ids = tiny_video()
    found = FrameInstances.from_ids(ids[0])
    assert len(found) == 2 and found.boxes.tolist() == [[4, 4, 20, 16], [30, 22, 50, 36]]
    with pytest.raises(ValueError, match="class_scores"):
        FrameInstances(found.masks, found.boxes, found.scores, np.ones((3, 2)))
    with pytest.raises(SelfvosInputError, match="does not exist"):
        GivenInstances.from_folder(tmp_path / "none", ["00000"])
    save_palette_png(tmp_path / "00000.png", ids[0])
    with pytest.raises(SelfvosInputError, match="no instance PNG for frame 00001"):
        GivenInstances.from_folder(tmp_path, ["00000", "00001"])
    source = GivenInstances.from_folder(tmp_path, ["00000"])
    assert np.array_equal(source(np.zeros((40, 60, 3), np.uint8), 0).masks, found.masks)
    with pytest.raises(SelfvosInputError, match="instance map is 60x40"):
        source(np.zeros((10, 10, 3), np.uint8), 0)
    zero_shot = selfvos.create_model("rvos", mode="zero_shot", max_instances=2, skip_dim=8, hidden=(8, 8, 8, 8))
    instances = RVOSInstances(zero_shot, max_side=48)(np.zeros((40, 60, 3), np.uint8), 0)
    assert instances.masks.shape[1:] == (40, 60) and len(instances) <= 2
    with pytest.raises(SelfvosInputError, match="trained zero-shot"):
        RVOSInstances(selfvos.create_model("rvos", skip_dim=8, hidden=(8, 8, 8, 8)))
    model = selfvos.create_model("masktrack", **SMALL)
    with pytest.raises(SelfvosInputError, match="runs vis only"):
        create_core(model, "one-shot")
    with pytest.raises(SelfvosInputError, match="needs a VIS head"):
        create_vis_core(zero_shot, source)
    with pytest.raises(SelfvosInputError, match="no inference setting"):
        create_vis_core(model, source, head={"delta": 1})
    with pytest.raises(SelfvosInputError, match="whole videos"):
        create_vis_core(model, source).step(np.zeros((40, 60, 3), np.uint8))


def test_recipe_is_validated_by_vis_ap():
    from selfvos.config import load_yaml
    from selfvos.finetune.config import FinetuneConfig, head_task
    from selfvos.finetune.recipe import open_videos
    from selfvos.finetune.validation import validation_metric

    cfg = load_yaml(FinetuneConfig, "recipes/configs/finetune/masktrack_davis17.yaml")
    assert head_task(cfg.model) == "vis" and validation_metric(head_task(cfg.model)) == "AP"
    assert not cfg.data.clip.binary and cfg.data.clip.max_objects == 7 and cfg.model.categories == ("object",)
    assert cfg.eval.enabled and cfg.eval.every == 100 and cfg.data.holdout_every == 6
    assert cfg.data.sources[0].endswith("davis2017-multi")  # index 0: never held out
    if all(Path(spec.partition(":")[2]).is_dir() for spec in cfg.data.sources):
        train, held = open_videos(cfg)
        assert "schoolgirls" in train.names and held.names == ["bus", "flamingo", "mallard-fly", "rollerblade",
                                                                "tennis"]
