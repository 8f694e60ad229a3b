"""CFBI / CFBI+ formulas on hand-made inputs: foreground AND background matching with learnable biases inside
``D = 1 - 2 / (1 + exp(||e_p - e_q||^2 + b))``, atrous rate 1 = plain matching at the head level, the instance
attention gate in (0, 1) from mask-weighted pooled embeddings, and the inference state flat in the video length."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import selfvos
import selfvos.heads.cfbi as cfbi_module
from selfvos.heads.cfbi import CFBI, CFBIConfig, CFBIInferenceCore, CFBIPlus, CFBIPlusConfig
from selfvos.layers import embedding_distance, global_matching, local_matching
from tests.heads.test_heads import tiny_batch

pytestmark = pytest.mark.usefixtures("one_thread")


def brute_force(query, reference, mask, bias, radius=None):
    """Per query pixel: min over reference pixels q in ``mask`` (and in the window) of 1 - 2/(1+exp(sq + b))."""
    c, h, w = query.shape
    out = torch.ones(h, w)
    for y in range(h):
        for x in range(w):
            best = None
            for v in range(h):
                for u in range(w):
                    if not mask[v, u] or (radius is not None and max(abs(v - y), abs(u - x)) > radius):
                        continue
                    sq = ((query[:, y, x] - reference[:, v, u]) ** 2).sum()
                    d = 1 - 2 / (1 + torch.exp(sq + bias))
                    best = d if best is None else torch.minimum(best, d)
            if best is not None:
                out[y, x] = best
    return out


def hand_made(seed=0, labels=2, h=5, w=6):
    g = torch.Generator().manual_seed(seed)
    query, reference, previous = (torch.randn(1, 3, h, w, generator=g) * 0.7 for _ in range(3))
    ids = torch.zeros(h, w, dtype=torch.int64)
    ids[1:3, 1:4] = 1
    fg_ref = torch.stack([ids == i for i in range(labels)])[None]  # (1, L, h, w)
    ids_prev = torch.roll(ids, 1, dims=1)
    fg_prev = torch.stack([ids_prev == i for i in range(labels)])[None]
    return query, {"emb": reference, "fg": fg_ref}, {"emb": previous, "fg": fg_prev}


def test_foreground_and_background_maps_use_the_mask_its_complement_and_their_biases():
    model = CFBI(CFBIConfig(radii=((1, 2),))).eval()
    with torch.no_grad():
        model.fg_bias.fill_(0.3)
        model.bg_bias.fill_(0.9)
    query, reference, previous = hand_made()
    maps = model.match(0, query, reference, previous)  # (1, L, 2 + 2R, h, w)
    assert maps.shape == (1, 2, 6, 5, 6)
    for label in range(2):
        fg, bg = reference["fg"][0, label], ~reference["fg"][0, label]
        torch.testing.assert_close(maps[0, label, 0], brute_force(query[0], reference["emb"][0], fg, 0.3))
        torch.testing.assert_close(maps[0, label, 1], brute_force(query[0], reference["emb"][0], bg, 0.9))
        pf, pb = previous["fg"][0, label], ~previous["fg"][0, label]
        for i, radius in enumerate((1, 2)):
            torch.testing.assert_close(maps[0, label, 2 + i], brute_force(query[0], previous["emb"][0], pf, 0.3, radius))
            torch.testing.assert_close(maps[0, label, 4 + i], brute_force(query[0], previous["emb"][0], pb, 0.9, radius))
    # the same numbers from the shared formula: D = embedding_distance(min squared distance, b)
    sq = ((query[0, :, 0, 0, None, None] - reference["emb"][0]) ** 2).sum(0)
    background = ~reference["fg"][0, 1]
    torch.testing.assert_close(maps[0, 1, 1, 0, 0], embedding_distance(sq[background].min(), 0.9))


def test_biases_receive_gradients_and_each_moves_only_its_maps():
    torch.manual_seed(0)
    model = CFBI(CFBIConfig(radii=((1, 2),)))
    model(tiny_batch(h=32, w=48))["logits"].logsumexp(dim=2).mean().backward()
    for bias in (model.fg_bias, model.bg_bias):
        assert bias.grad is not None and torch.isfinite(bias.grad).all() and bias.grad.abs().sum() > 0
    query, reference, previous = hand_made(seed=1)
    before = model.match(0, query, reference, previous).detach()
    with torch.no_grad():
        model.fg_bias += 0.5
    after = model.match(0, query, reference, previous).detach()
    foreground, background = [0, 2, 3], [1, 4, 5]
    assert (after[:, :, foreground] >= before[:, :, foreground]).all() and not torch.equal(after[:, :, foreground], before[:, :, foreground])
    assert torch.equal(after[:, :, background], before[:, :, background])


def plus_pair(atrous):
    cfg = CFBIPlusConfig(radii=((2, 4), (2,)), atrous=atrous, ensembler_dims=(8, 16), blocks=1, decoder_dim=8)
    torch.manual_seed(0)
    return CFBIPlus(cfg).eval()


def test_atrous_rate_one_is_plain_matching_at_the_head_level(monkeypatch):
    batch = tiny_batch(h=64, w=96)
    plus = plus_pair((1, 1))
    with torch.no_grad():
        atrous_one = plus(batch)["logits"]
    # the same weights as a "cfbi" model (no CFBI+ class) and through matching called with no atrous argument
    plain = CFBI(CFBIConfig(**{f.name: getattr(plus.config, f.name) for f in dataclasses.fields(CFBIConfig)})).eval()
    plain.load_state_dict(plus.state_dict())
    calls = []
    monkeypatch.setattr(cfbi_module, "global_matching", lambda q, r, m, bias, stride, chunk: (
        calls.append(("global", stride)), global_matching(q, r, m, bias))[1])
    monkeypatch.setattr(cfbi_module, "local_matching", lambda q, r, m, radii, dilation, bias: (
        calls.append(("local", dilation, tuple(radii))), local_matching(q, r, m, radii, bias=bias))[1])
    with torch.no_grad():
        assert torch.equal(plain(batch)["logits"], atrous_one)
    assert set(calls) == {("global", 1), ("local", 1, (2, 4)), ("local", 1, (2,))}
    # rate 2 at 1/8: every 2nd reference pixel globally, the same windows walked in steps of 2 locally
    calls.clear()
    two = plus_pair((2, 1))
    two.load_state_dict(plus.state_dict())
    with torch.no_grad():
        atrous_two = two(batch)["logits"]
    assert ("global", 2) in calls and ("local", 2, (1, 2)) in calls and not torch.equal(atrous_two, atrous_one)


def test_instance_attention_gate_is_in_zero_one_from_pooled_embeddings():
    torch.manual_seed(0)
    model = CFBI(CFBIConfig(radii=((1,),))).eval()
    emb = torch.randn(1, 32, 4, 4)
    probs = torch.zeros(1, 2, 32, 32)  # background + one object on the top-left quarter at full resolution
    probs[:, 1, :16, :16] = 1.0
    probs[:, 0] = 1.0 - probs[:, 1]
    state = model.describe([emb], probs)[0]
    pooled = state["pooled"]  # (B, L, 2C): label mean, complement mean
    torch.testing.assert_close(pooled[0, 1, :32], emb[0, :, :2, :2].mean(dim=(1, 2)))
    outside = torch.ones(4, 4, dtype=torch.bool)
    outside[:2, :2] = False
    torch.testing.assert_close(pooled[0, 1, 32:], emb[0][:, outside].mean(dim=1))
    assert state["fg"][0, 1, :2, :2].all() and state["fg"][0, 1].sum() == 4 and torch.equal(state["fg"][0, 0], ~state["fg"][0, 1])
    guide = torch.randn(16, 4 * 32) * 3
    for j in range(model.config.blocks):
        gate = model.gate(0, j, guide)
        assert gate.shape == (16, 32) and (gate > 0).all() and (gate < 1).all()


def test_training_uses_its_own_predictions_not_later_ground_truth():
    torch.manual_seed(0)
    model = selfvos.create_model("cfbi").eval()
    batch = tiny_batch(h=32, w=48)
    changed = dict(batch, masks=batch["masks"].clone())
    changed["masks"][:, 1:] = 0
    with torch.no_grad():
        torch.testing.assert_close(model(batch)["logits"], model(changed)["logits"])


@pytest.mark.parametrize("name", ["cfbi", "cfbi_plus"])
def test_core_state_is_flat_in_the_number_of_frames(name):
    torch.manual_seed(0)
    model = selfvos.create_model(name).eval()
    core = CFBIInferenceCore(model)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
    mask = np.zeros((40, 56), np.uint8)
    mask[5:20, 5:30], mask[25:38, 30:50] = 3, 6
    core.step(frame, mask)
    reference = core._reference
    sizes = []
    for _ in range(8):
        core.step(frame)
        sizes.append(core.state_bytes)
    assert len(set(sizes)) == 1 and core._reference is reference and core.object_ids == [3, 6]
    with pytest.raises(ValueError, match="one-shot"):
        CFBIInferenceCore(model).step(frame)
