"""MuGObjective: keys, weighted sum, ablation switches, registry, shared encoding, overfitting a clip."""
from __future__ import annotations

import pytest
import torch

from selfvos.config import apply_overrides, from_dict, to_dict
from selfvos.pretrain import MuGModel, MuGObjective, MuGPretrainer, ObjectiveConfig
from selfvos.pretrain.objective import TERMS
from selfvos.registry import OBJECTIVES

from .conftest import backbone_grad_ok, small_model, tiny_batch



def test_registered_objectives():
    assert {"frame", "tracking", "matching", "memory", "mug"} <= set(OBJECTIVES.names())
    assert isinstance(OBJECTIVES.create("mug", config=ObjectiveConfig(matching=False)), MuGObjective)


def test_defaults_follow_the_brief_and_round_trip_as_config():
    cfg = ObjectiveConfig()
    assert cfg.weights() == {"frame": 1.0, "tracking": 0.1, "matching": 0.02, "memory": 0.5, "flow_explanation": 1.0,
                             "sfm": 0.1, "morel": 1.0}
    # the label-free motion objectives are opt-in
    assert [name for name, on in cfg.enabled().items() if not on] == ["flow_explanation", "sfm", "morel"]
    assert from_dict(ObjectiveConfig, to_dict(cfg)) == cfg
    changed = apply_overrides(cfg, ["--tracking_cfg.patch_fraction", "0.5", "--memory=false"])
    assert changed.tracking_cfg.patch_fraction == 0.5 and changed.memory is False


def test_all_terms_present_finite_and_weighted(model, batch):
    torch.manual_seed(0)
    out = MuGObjective()(model, batch)
    assert set(TERMS) | {"loss", "matching_transform", "matching_consistency"} == set(out)
    for name in TERMS:
        on = ObjectiveConfig().enabled()[name]
        assert torch.isfinite(out[name]) and (out[name] > 0) == on and not out[name].requires_grad, name
    expected = out["frame"] + 0.1 * out["tracking"] + 0.02 * out["matching"] + 0.5 * out["memory"]
    torch.testing.assert_close(out["loss"].detach(), expected)
    out["loss"].backward()
    assert backbone_grad_ok(model)


@pytest.mark.parametrize("only", TERMS)
def test_ablation_switches_remove_terms(batch, only):
    model = small_model()
    cfg = ObjectiveConfig(**{name: name == only for name in TERMS})
    if only in ("flow_explanation", "sfm"):
        from selfvos.data.sampling import clip_flow

        batch = {**batch, "flow": torch.stack([clip_flow(clip) for clip in batch["frames"]])}
    objective = MuGObjective(cfg, feature_channels=model.feature_channels)
    out = objective(model, batch)
    for name in TERMS:
        assert (out[name] != 0) == (name == only), (only, name)
    torch.testing.assert_close(out["loss"].detach(), cfg.weights()[only] * out[only])
    out["loss"].backward()
    if only in ("sfm", "morel"):  # the motion heads start at zero motion: gradients reach phi and rho after a step
        torch.optim.SGD([*model.parameters(), *objective.parameters()], lr=0.1).step()
        model.zero_grad()
        objective(model, batch)["loss"].backward()
    assert backbone_grad_ok(model)
    users = [(model.mask_head, {"frame", "memory", "flow_explanation", "sfm", "morel"}),  # rho decodes the memory read-out too
             (model.memory.key, {"memory"}), (model.regressor.fc, {"matching"}), (model.projection, {"matching"})]
    for module, used_by in users:
        grad = module.weight.grad
        assert (grad is not None and grad.abs().sum() > 0) == (only in used_by), (only, module)


def encode_calls(monkeypatch, batch) -> list:
    """The image shapes of every ``MuGModel.encode`` call of one default objective step, in order."""
    calls = []
    original = MuGModel.encode

    def counting(self, images):
        calls.append(tuple(images.shape))
        return original(self, images)

    monkeypatch.setattr(MuGModel, "encode", counting)
    MuGObjective()(small_model(), batch)
    return calls


def test_each_image_is_encoded_once(batch, monkeypatch):
    calls = encode_calls(monkeypatch, batch)
    # the clip, the references and the warped images of the matching term: three backbone calls
    assert calls == [(2, 3, 3, 64, 64), (2, 2, 3, 32, 32), (2, 3, 64, 64)]


def test_split_view_tracking_reads_the_close_up_frames(batch, monkeypatch):
    model = small_model()
    only_tracking = MuGObjective(ObjectiveConfig(frame=False, matching=False, memory=False))
    torch.manual_seed(0)
    plain = only_tracking(model, batch)["tracking"]
    torch.manual_seed(0)  # the same patches on the same frames passed as the close-up: the same loss
    assert torch.allclose(only_tracking(model, {**batch, "track_frames": batch["frames"]})["tracking"], plain)
    close_up = batch["frames"][..., 8:40, 8:40]
    torch.manual_seed(0)
    split = only_tracking(model, {**batch, "track_frames": close_up})["tracking"]
    assert not torch.allclose(split, plain)
    calls = encode_calls(monkeypatch, {**batch, "track_frames": close_up})
    # clip, references, the close-up clip for tracking, the matching warps
    assert calls == [(2, 3, 3, 64, 64), (2, 2, 3, 32, 32), (2, 3, 3, 32, 32), (2, 3, 64, 64)]


def test_configuration_errors(model, batch):
    with pytest.raises(ValueError, match="every term is disabled"):
        MuGObjective(ObjectiveConfig(frame=False, tracking=False, matching=False, memory=False))
    no_refs = {k: v for k, v in batch.items() if not k.startswith("ref")}
    with pytest.raises(ValueError, match="needs reference frames"):
        MuGObjective()(model, no_refs)
    out = MuGObjective(ObjectiveConfig(memory=False))(model, no_refs)
    assert out["memory"] == 0 and torch.isfinite(out["loss"])


def test_loss_falls_when_overfitting_one_clip():
    torch.manual_seed(0)
    model = small_model()
    batch = tiny_batch(b=1, t=3, r=2, size=64, ref_size=32)
    objective = MuGObjective()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(30):
        out = objective(model, batch)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in out.items()})
    first, last = history[0], history[-1]
    assert sum(h["loss"] for h in history[-3:]) / 3 < 0.5 * first["loss"]
    assert last["frame"] < 0.6 * first["frame"] and last["memory"] < 0.6 * first["memory"]
    assert min(h["tracking"] for h in history[-5:]) < first["tracking"]


def test_pretrainer_wraps_model_and_objective_in_one_forward(batch):
    model = small_model()
    wrapper = MuGPretrainer(model)
    torch.manual_seed(3)
    out = wrapper(batch)
    torch.manual_seed(3)
    direct = MuGObjective()(model, batch)
    for key in direct:
        torch.testing.assert_close(out[key], direct[key])
    out["loss"].backward()
    frozen = {name for name, p in wrapper.named_parameters() if not p.requires_grad}
    assert all(name.startswith(("model.backbone.layer4", "model.backbone.fc")) for name in frozen)
    missing = [name for name, p in wrapper.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []  # every trainable parameter is used by the full objective (DDP-safe)



def test_full_step_at_the_benchmark_setting():
    """B=2, T=3 frames of 128 px, R=2 references of 64 px, default model (ResNet-18 OS8, phi = layer3)."""
    torch.manual_seed(0)
    model = MuGModel()
    batch = tiny_batch(b=2, t=3, r=2, size=128, ref_size=64)
    assert model.encode(batch["frames"]).shape == (2, 3, 256, 16, 16)
    assert model.encode(batch["refs"]).shape == (2, 2, 256, 8, 8)
    out = MuGPretrainer(model)(batch)
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    assert backbone_grad_ok(model)
