"""Issue 19, damaged checkpoints: every checkpoint carries a manifest of its files; resume skips a damaged
newest checkpoint for the newest intact one (and still ends bit-identical to an uninterrupted run), names
what it skipped, and a damaged checkpoint given explicitly is a clean ``SelfvosInputError``."""
from __future__ import annotations

import json

import pytest
import torch
from tests.engine.engine_toys import flat_weights, make_parts, reset_accelerate_state, toy_config

from selfvos.engine import Callback, Trainer
from selfvos.engine.checkpoint import MANIFEST_NAME, list_checkpoints, verify_checkpoint
from selfvos.errors import SelfvosInputError


class KillAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, metrics):
        if trainer.state.step == self.step:
            raise KeyboardInterrupt


def run(out, callbacks=(), **overrides):
    """10 clips in batches of 4 (2 per epoch), random frame dropping: resume must replay data and RNG."""
    model, objective, data = make_parts(seed=3, drop=0.3, n=10)
    cfg = toy_config(out, **{"max_steps": 6, "save_every": 2, **overrides})
    return Trainer(model, data, cfg, objective=objective, callbacks=list(callbacks)), model


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Weights of the uninterrupted 6-step run."""
    reset_accelerate_state()
    trainer, model = run(tmp_path_factory.mktemp("full"))
    trainer.train()
    reset_accelerate_state()
    return flat_weights(model)


def interrupted(out):
    """A run killed after step 5: checkpoints at steps 2 and 4."""
    trainer, _ = run(out, [KillAt(5)])
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    reset_accelerate_state()
    return out / "checkpoints"


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated weights": (lambda ck: truncate(ck / "model.safetensors"), "model.safetensors: "),
    "deleted optimizer": (lambda ck: (ck / "optimizer.bin").unlink(), "optimizer.bin: missing"),
    "flipped byte": (lambda ck: flip_a_byte(ck / "optimizer.bin"), "does not match its sha256"),
    "bad manifest": (lambda ck: (ck / MANIFEST_NAME).write_text("{not json"), f"{MANIFEST_NAME}: not a readable"),
    # written before manifests existed: only the load itself can tell
    "legacy, truncated": (lambda ck: ((ck / MANIFEST_NAME).unlink(), truncate(ck / "model.safetensors")),
                          "cannot be loaded"),
}


def test_every_checkpoint_carries_a_manifest_that_verifies(tmp_path):
    trainer, _ = run(tmp_path, max_steps=2)
    trainer.train()
    checkpoint = tmp_path / "checkpoints" / "step_0000002"
    manifest = json.loads((checkpoint / MANIFEST_NAME).read_text())
    assert manifest["step"] == 2
    on_disk = {p.name: p.stat().st_size for p in checkpoint.iterdir() if p.name != MANIFEST_NAME}
    assert {name: entry["size"] for name, entry in manifest["files"].items()} == on_disk
    assert {"model.safetensors", "optimizer.bin", "scheduler.bin"} <= set(on_disk)
    assert verify_checkpoint(checkpoint) is None


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, reference, damage, caplog):
    checkpoints = interrupted(tmp_path)
    spoil, problem = DAMAGE[damage]
    spoil(checkpoints / "step_0000004")
    with caplog.at_level("WARNING", logger="selfvos.engine.trainer"):
        trainer, model = run(tmp_path)
    assert trainer.state.step == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"checkpoint {checkpoints / 'step_0000004'} is damaged (") and problem in m
               for m in messages), messages
    assert any(m.startswith(f"resuming from {checkpoints / 'step_0000002'}, the newest intact") for m in messages)
    trainer.train()
    for key, value in flat_weights(model).items():
        assert torch.equal(value, reference[key]), key
    assert verify_checkpoint(checkpoints / "step_0000006") is None


def test_a_damaged_checkpoint_given_explicitly_is_a_clean_error(tmp_path):
    checkpoints = interrupted(tmp_path / "a")
    latest = checkpoints / "step_0000004"
    (latest / "scheduler.bin").unlink()
    with pytest.raises(SelfvosInputError) as caught:
        run(tmp_path / "b", resume=str(latest))
    assert str(caught.value) == f"{latest}: damaged checkpoint, cannot resume from it: scheduler.bin: missing"
    reset_accelerate_state()
    (latest / MANIFEST_NAME).unlink()  # without a manifest the load itself fails: still no raw traceback
    with pytest.raises(SelfvosInputError, match=r"damaged checkpoint, cannot resume from it: cannot be loaded \("):
        run(tmp_path / "b", resume=str(latest))


def test_resume_stops_when_no_checkpoint_is_intact(tmp_path):
    checkpoints = interrupted(tmp_path)
    for _, checkpoint in list_checkpoints(checkpoints):
        truncate(checkpoint / "optimizer.bin")
    with pytest.raises(SelfvosInputError, match=r"checkpoints: no intact checkpoint to resume from \(step_0000004: "
                                                r"optimizer\.bin: .*; step_0000002: optimizer\.bin: "):
        run(tmp_path)
