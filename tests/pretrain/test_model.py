"""MuGModel: feature shapes, input normalisation, grey input, co-attention formula, identity start."""
from __future__ import annotations

import torch

from selfvos.backbones import BackboneConfig
from selfvos.pretrain import MuGConfig, MuGModel

from .conftest import small_model


def test_default_config_is_resnet18_stride8_layer3():
    model = MuGModel()
    assert model.config.backbone.name == "resnet18" and model.config.backbone.output_stride == 8
    assert (model.feature_layer, model.feature_channels, model.feature_stride) == ("layer3", 256, 8)
    assert set(model.num_parameters()) == {"backbone", "mask_head", "projection", "regressor", "memory", "coattention_weight"}


def test_encode_keeps_leading_dims_and_matches_the_backbone(model):
    frames = torch.rand(2, 3, 3, 64, 48)
    feats = model.encode(frames)
    assert feats.shape == (2, 3, 256, 8, 6)
    model.eval()
    with torch.no_grad():
        direct = model.backbone((frames[1, 2:3] - model.pixel_mean) / model.pixel_std)["layer3"]
        torch.testing.assert_close(model.encode(frames)[1, 2:3], direct)
    assert model.frame_logits(feats).shape == (2, 3, 1, 8, 6)


def test_grey_backbone_sees_luminance():
    torch.manual_seed(0)
    model = MuGModel(MuGConfig(backbone=BackboneConfig(in_chans=1, return_layers=("layer2",)), embed_dim=16,
                               regressor_grid=4, regressor_channels=16)).eval()
    rgb = torch.rand(1, 3, 32, 32)
    luma = (0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])[:, None]
    with torch.no_grad():
        torch.testing.assert_close(model.encode(rgb), model.encode(luma))
    assert model.encode(rgb).shape == (1, 128, 4, 4)


def test_coattention_is_x_i_transpose_w_x_j():
    model = small_model()
    with torch.no_grad():
        model.coattention_weight.copy_(torch.randn(32, 32))
    x_i, x_j = torch.randn(2, 32, 3, 4), torch.randn(2, 32, 5, 2)
    a = model.coattention(x_i, x_j)
    assert a.shape == (2, 12, 10)
    expected = torch.einsum("bci,cd,bdj->bij", x_i.flatten(2), model.coattention_weight, x_j.flatten(2))
    torch.testing.assert_close(a, expected, rtol=1e-4, atol=1e-4)


def test_regressor_starts_at_identity_and_embeddings_are_unit_norm():
    model = small_model()
    x = model.embed(torch.randn(2, 256, 8, 8))
    torch.testing.assert_close(x.norm(dim=1), torch.ones(2, 8, 8))
    theta = model.regress_transform(x, x.flip(-1))
    torch.testing.assert_close(theta, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(2, -1, -1))
