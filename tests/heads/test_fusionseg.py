"""FusionSeg wiring: shapes; two trunks that ``--init`` fills; the motion stream reads the rendered flow; the
output is the fusion of the two streams' scores and depends on both; per frame, so output t reads only frame t
and its flow t -> t+1, offline or not."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import selfvos
from selfvos.layers.two_stream import flow_to_image

pytestmark = pytest.mark.usefixtures("one_thread")


def small_model(**options):
    torch.manual_seed(0)
    return selfvos.create_model("fusionseg", **options).eval()


def clip(b: int = 2, t: int = 3, h: int = 32, w: int = 48, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"frames": torch.rand(b, t, 3, h, w, generator=g), "flows": 3 * torch.randn(b, t, 2, h, w, generator=g)}


def test_shapes_and_two_initialisable_trunks():
    model, batch = small_model(), clip()
    assert type(model).needs_flow and type(model).tasks == ("zero-shot",)
    assert set(model.backbones()) == {"appearance.backbone", "motion.backbone"}
    assert model.appearance.backbone is not model.motion.backbone
    with torch.no_grad():
        out = model(batch)
    assert out["logits"].shape == (2, 3, 2, 32, 48) and out["frames"].tolist() == [0, 1, 2]
    with torch.no_grad():
        assert model(clip(1, 2, 33, 50))["logits"].shape == (1, 2, 2, 33, 50)
    with pytest.raises(ValueError, match="one output stride"):
        selfvos.create_model("fusionseg", **{"motion_backbone.output_stride": 16})


def test_output_is_the_fusion_of_both_streams():
    model, batch = small_model(), clip()
    motion_inputs = []
    model.motion.register_forward_pre_hook(lambda module, args: motion_inputs.append(args[0]))
    frames, flows = batch["frames"].flatten(0, 1), batch["flows"].flatten(0, 1)
    with torch.no_grad():
        logits = model(batch)["logits"].flatten(0, 1)
        appearance, motion = model.streams(frames, flows)
        a, m, j = model.fusion.branches(appearance, motion)
        fused = torch.maximum(torch.maximum(a, m), j)
    torch.testing.assert_close(motion_inputs[0], model.normalize(flow_to_image(flows)))
    assert appearance.shape == motion.shape == (6, 2, 4, 6)
    torch.testing.assert_close(logits, F.interpolate(fused, size=(32, 48), mode="bilinear", align_corners=False))
    # every branch wins somewhere (the fusion is not reduced to one stream)
    winner = torch.stack([a, m, j]).argmax(dim=0)
    assert set(winner.unique().tolist()) == {0, 1, 2}


@pytest.mark.parametrize("stream", ["appearance", "motion"])
def test_zeroing_either_stream_changes_the_output(stream):
    model, batch = small_model(), clip()
    with torch.no_grad():
        before = model(batch)["logits"]
        getattr(model, stream).register_forward_hook(lambda module, args, out: torch.zeros_like(out))
        after = model(batch)["logits"]
    assert (after - before).abs().amax() > 1e-3


def test_fusion_sum_mode():
    model, batch = small_model(fusion="sum"), clip()
    frames, flows = batch["frames"].flatten(0, 1), batch["flows"].flatten(0, 1)
    with torch.no_grad():
        logits = model(batch)["logits"].flatten(0, 1)
        a, m, j = model.fusion.branches(*model.streams(frames, flows))
    torch.testing.assert_close(logits, F.interpolate(a + m + j, size=(32, 48), mode="bilinear", align_corners=False))


@pytest.mark.parametrize("offline", [True, False])
def test_output_t_reads_only_frame_t_and_its_flow(offline):
    model, batch, other = small_model(), clip(), clip(seed=1)
    with torch.no_grad():
        before = model(batch, offline=offline)["logits"]
        for t in range(3):
            changed = {key: value.clone() for key, value in batch.items()}
            for key in ("frames", "flows"):
                changed[key][:, t] = other[key][:, t]
            after = model(changed, offline=offline)["logits"]
            for s in range(3):
                if s == t:
                    assert not torch.allclose(after[:, s], before[:, s])
                else:
                    torch.testing.assert_close(after[:, s], before[:, s], rtol=0, atol=0)
        flow_only = {"frames": batch["frames"], "flows": batch["flows"].clone()}
        flow_only["flows"][:, 0] = other["flows"][:, 0]  # frame 1 changed -> flow 0 -> 1 changed
        assert not torch.allclose(model(flow_only, offline=offline)["logits"][:, 0], before[:, 0])
