"""PDB wiring: the PDC's dilation rates are the paper's (2, 4, 8, 16) and it keeps its input; each DB-ConvLSTM
stacks a backward ConvLSTM on the forward one's outputs (deeper bidirectional) and sums the two directions;
offline outputs see the future, causal ones (``offline=False``) do not."""
from __future__ import annotations

import pytest
import torch

import selfvos
from selfvos.heads.pdb import PDB, DeeperBidirectionalConvLSTM
from selfvos.registry import CORES, ONLINE_LOSSES

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"branch_dim": 4, "feature_dim": 6, "hidden": 5}


@pytest.fixture(scope="module")
def model() -> PDB:
    torch.manual_seed(0)
    return selfvos.create_model("pdb", **SMALL).eval()


def clip(b: int = 2, t: int = 4, h: int = 40, w: int = 56) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"frames": torch.rand(b, t, 3, h, w, generator=g)}


def test_registration_and_shapes(model):
    assert type(model).needs_flow is False and model.tasks == ("zero-shot",) and model.info.papers == ("pdb",)
    assert "pdb" in CORES.names() and "pdb" in ONLINE_LOSSES.names()
    batch = clip(h=50, w=70)  # not a multiple of 8: the 1/8 grid is 7 x 9, logits come back at 50 x 70
    with torch.no_grad():
        for offline in (True, False):
            out = model(batch, offline=offline)
            assert out["logits"].shape == (2, 4, 2, 50, 70) and torch.equal(out["frames"], torch.arange(4))
            assert torch.isfinite(out["logits"]).all()


def test_pdc_uses_the_paper_dilation_rates_and_keeps_its_input(model):
    pdc = model.pdc
    assert pdc.rates == (2, 4, 8, 16)
    convs = [branch[0] for branch in pdc.dilated]
    assert [c.dilation for c in convs] == [(2, 2), (4, 4), (8, 8), (16, 16)]
    assert all(c.kernel_size == (3, 3) and c.padding == c.dilation for c in convs)
    channels = model.backbone.out_channels["layer3"]
    assert all(c.in_channels == channels and c.out_channels == SMALL["branch_dim"] for c in convs)
    assert isinstance(pdc.centre, torch.nn.Identity)  # [x, T_2(x), T_4(x), T_8(x), T_16(x)]
    assert pdc.fuse[0].in_channels == channels + 4 * SMALL["branch_dim"]
    assert pdc.fuse[0].out_channels == SMALL["feature_dim"]


def test_db_convlstm_backward_cell_reads_the_forward_outputs(model):
    assert [branch.forward_cell.dilation for branch in model.recurrent] == [1, 2]
    for branch in model.recurrent:
        # gate convolutions read [input, hidden]: the forward cell's input is the PDC features, the backward
        # cell's input is the forward cell's hidden state (deeper bidirectional, not side by side)
        assert branch.forward_cell.gates.in_channels == SMALL["feature_dim"] + SMALL["hidden"]
        assert branch.backward_cell.gates.in_channels == SMALL["hidden"] + SMALL["hidden"]
        assert branch.backward_cell.gates.dilation == branch.forward_cell.gates.dilation
    assert model.classifier.in_channels == 2 * SMALL["hidden"]

    torch.manual_seed(0)
    branch = DeeperBidirectionalConvLSTM(3, 4, dilation=2)
    x = torch.randn(1, 5, 3, 6, 7)
    forward_h, backward_in = [], []
    branch.forward_cell.register_forward_hook(lambda m, args, out: forward_h.append(out[0]))
    branch.backward_cell.register_forward_pre_hook(lambda m, args: backward_in.append(args[0]))
    with torch.no_grad():
        ahead, back = branch.directions(x)
        total = branch(x)
    forward_h, backward_in = forward_h[:5], backward_in[:5]  # the calls of directions()
    assert len(backward_in) == 5
    for k, seen in enumerate(backward_in):  # backward step k reads frame 4 - k's forward output
        torch.testing.assert_close(seen, forward_h[4 - k], rtol=0, atol=0)
        torch.testing.assert_close(seen, ahead[:, 4 - k], rtol=0, atol=0)
    torch.testing.assert_close(total, ahead + back)
    with torch.no_grad():
        causal_ahead, causal_back = branch.directions(x, offline=False)
    torch.testing.assert_close(causal_ahead, ahead)
    assert not causal_back.any()


def test_causal_output_ignores_later_frames_offline_output_does_not(model):
    batch = clip()
    changed = {"frames": batch["frames"].clone()}
    changed["frames"][:, 3] = torch.rand_like(changed["frames"][:, 3])  # only the last frame changes
    with torch.no_grad():
        causal, causal_changed = model(batch, offline=False)["logits"], model(changed, offline=False)["logits"]
        offline, offline_changed = model(batch)["logits"], model(changed)["logits"]
        prefix = model({"frames": batch["frames"][:, :2]}, offline=False)["logits"]
    torch.testing.assert_close(causal_changed[:, :3], causal[:, :3], rtol=0, atol=0)
    torch.testing.assert_close(prefix, causal[:, :2])  # output t = the output of the clip cut after t
    assert not torch.allclose(causal_changed[:, 3], causal[:, 3])
    for t in range(3):  # every earlier frame sees the change through the backward ConvLSTMs
        assert (offline_changed[:, t] - offline[:, t]).abs().max() > 1e-6
    assert not torch.allclose(offline, causal)


def test_config_checks():
    with pytest.raises(ValueError, match="output_stride"):
        selfvos.create_model("pdb", **{"backbone.output_stride": 16})
    with pytest.raises(ValueError, match="odd"):
        selfvos.create_model("pdb", kernel=2)
