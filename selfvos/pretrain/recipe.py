"""MuG pretraining end to end: videos -> pseudo-masks -> rounds of (train, relabel) -> exported model.

``run_pretraining(cfg)`` is what ``accelerate launch recipes/mug_pretrain.py`` and ``selfvos pretrain`` run:

1. open the videos (any ``selfvos.data`` source; their human masks, if any, are NEVER used for training,
   only to report pseudo-mask quality when ``eval_gt`` is on);
2. round 0 pseudo-masks from an unsupervised labeler (``pseudo.method``: ``fused`` by default) into a
   versioned, resumable :class:`PseudoLabelStore`, every process labeling its shard of the videos (one
   merged manifest, written by the main process; see :mod:`selfvos.pseudo.generate`);
3. for each bootstrapping round r: train ``steps_per_round`` steps on store round r, then the trained model
   relabels every video into store round r + 1 (:mod:`selfvos.pretrain.bootstrap`) and the round's
   pseudo-mask quality and a gallery go to MLflow;
4. export the model as ``output_dir/model`` (safetensors + config.json, loadable with
   ``selfvos.from_pretrained``).

``init`` continues pretraining from a checkpoint: every weight of the model starts from it, strictly (same
architecture, names and shapes; anything else is an error naming its weights file), and ``training.json``
records it with its SHA-256. ``run_pretraining(cfg, callbacks=...)`` adds engine callbacks after the relabel
one (e.g. a wall-clock budget, :mod:`selfvos.pretrain.adapt`).

A NaN/inf loss skips the update (``train.max_nonfinite_steps`` in a row stop the run); relabeling and the
export refuse non-finite weights, and a run that raises is marked FAILED in MLflow.

Resuming (``train.resume: auto``) restores the step, the round and the data position; an interrupted
pseudo-label generation continues with the first unfinished video.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from selfvos.data.augment import ClipAugment, ClipAugmentConfig
from selfvos.data.sampling import ClipSamplerConfig
from selfvos.engine.config import TrainConfig
from selfvos.pretrain.bootstrap import BootstrapConfig
from selfvos.pretrain.model import MuGConfig
from selfvos.pretrain.objective import ObjectiveConfig

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """Which videos to pretrain on: any ``selfvos.data.sources.open_source`` spec plus its options."""

    source: str = "synthetic"
    options: Dict[str, Any] = field(default_factory=lambda: {"num_videos": 8, "num_frames": 24, "size": [128, 128]})
    clips_per_video: int = 8  # dataset length = videos x clips_per_video (one "epoch")
    augment: bool = True
    augment_cfg: ClipAugmentConfig = field(default_factory=ClipAugmentConfig)


@dataclass
class PseudoConfig:
    """Round-0 pseudo-masks: labeler name (``PSEUDO_LABELERS``), its options, frames labeled, store folder."""

    method: str = "fused"
    options: Dict[str, Any] = field(default_factory=dict)
    frame_step: int = 1
    store: Optional[str] = None  # default: <train.output_dir>/pseudo_labels
    eval_gt: bool = True  # report pseudo-mask J against human masks where they exist (never trained on)
    gallery_videos: int = 6


@dataclass
class PretrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    clip: ClipSamplerConfig = field(default_factory=ClipSamplerConfig)
    model: MuGConfig = field(default_factory=MuGConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    init: str | None = None  # checkpoint (folder, .safetensors, Hub id) every weight starts from; None = fresh
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=300, batch_size=4, lr=3e-4, warmup_steps=20, output_dir="runs/mug_synthetic", save_every=100))

    @property
    def steps_per_round(self) -> int:
        return math.ceil(self.train.max_steps / self.bootstrap.rounds)

    @property
    def store_dir(self) -> Path:
        return Path(self.pseudo.store or Path(self.train.output_dir) / "pseudo_labels")


def init_from_checkpoint(model: Any, checkpoint: str) -> None:
    """Load every weight of ``model`` from ``checkpoint`` (an exported folder, a ``.safetensors`` file or a Hub
    id); a missing, unexpected or differently shaped tensor is a ``SelfvosInputError`` naming the weights file."""
    from selfvos.hub.record import weights_file
    from selfvos.hub.weights import load_weights

    load_weights(model, weights_file(checkpoint), strict=True)


def run_pretraining(cfg: PretrainConfig, callbacks: Sequence[Any] = ()) -> Path:
    """Pretrain, bootstrapping between rounds; returns the exported model folder. ``callbacks``: further
    engine callbacks, run after the relabel one."""
    from accelerate.utils import set_seed

    from selfvos.config import to_dict
    from selfvos.data.clip_stream import clip_dataset
    from selfvos.data.sources import open_source
    from selfvos.pretrain.relabel import RelabelCallback, RoundMaskProvider, make_gallery_image, rounds_in_place
    from selfvos.engine.trainer import Trainer, build_accelerator
    from selfvos.hub.record import write_training_record
    from selfvos.pretrain import MuGModel, MuGObjective
    from selfvos.pseudo import generate_pseudo_labels
    from selfvos.pseudo.generate import ShardPlan
    from selfvos.pseudo.store import PseudoLabelStore
    from selfvos.registry import PSEUDO_LABELERS

    accelerator = build_accelerator(cfg.train)
    collection = open_source(cfg.data.source, **cfg.data.options)
    store = PseudoLabelStore(cfg.store_dir)

    def round_zero() -> Dict[str, Any]:
        """Round 0 on every process (each labels its shard); its manifest on every process."""
        if rounds_in_place(accelerator, store):
            return store.manifest(0)
        labeler = PSEUDO_LABELERS.create(cfg.pseudo.method, **cfg.pseudo.options)
        return generate_pseudo_labels(collection, store, 0, labeler, frame_step=cfg.pseudo.frame_step,
                                      eval_gt=cfg.pseudo.eval_gt, progress=accelerator.is_main_process,
                                      shard=ShardPlan.from_state(accelerator))

    manifest0 = round_zero()

    provider = RoundMaskProvider(store)
    augment = ClipAugment(cfg.data.augment_cfg) if cfg.data.augment else None
    if (cfg.objective.flow_explanation or cfg.objective.sfm) and not cfg.clip.flow:
        cfg.clip.flow = True  # the flow-explanation and SfM-Net objectives read the clips' optical flow
    dataset = clip_dataset(collection, cfg.clip, provider, augment, cfg.data.clips_per_video)  # stream: sources stream
    set_seed(cfg.train.seed)  # the same initial weights for the same config, whatever ran before in this process
    model = MuGModel(cfg.model)
    if cfg.init:
        init_from_checkpoint(model, cfg.init)
    relabel = RelabelCallback(cfg, collection, store, provider)
    objective = MuGObjective(cfg.objective, feature_channels=model.feature_channels)
    trainer = Trainer(model, dataset, cfg.train, objective=objective,
                      callbacks=[relabel, *callbacks],
                      run_config={k: v for k, v in to_dict(cfg).items() if k != "train"})
    with trainer:  # the MLflow run ends FINISHED, or FAILED / KILLED when anything below raises
        if accelerator.is_main_process and manifest0 is not None and trainer.state.step == 0:
            quality = (manifest0.get("quality") or {}).get("mean_j")
            if quality is not None:
                trainer.tracker.log_metrics({"round/pseudo_mask_J": quality}, step=0)
            image = make_gallery_image(collection, store, 0, cfg.pseudo.gallery_videos)
            trainer.tracker.log_image(image, "pseudo_labels/round_000.png")
        while trainer.state.round < cfg.bootstrap.rounds and trainer.state.step < cfg.train.max_steps:
            provider.round = trainer.state.round
            log.info("round %d: training on pseudo-label round %d", trainer.state.round, provider.round)
            trainer.train(cfg.steps_per_round)
        out = trainer.export(Path(cfg.train.output_dir) / "model")  # refuses non-finite weights
        if accelerator.is_main_process:
            write_training_record(out, recipe="recipes/mug_pretrain.py", data=[cfg.data.source], config=cfg,
                                  init=cfg.init, step=trainer.state.step, rounds=trainer.state.round,
                                  videos=collection.names, pseudo_label_store=str(cfg.store_dir))
            log.info("exported the pretrained model to %s", out)
    return out
