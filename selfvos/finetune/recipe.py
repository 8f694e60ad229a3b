"""Supervised fine-tuning of any registered head, end to end: videos -> clips -> head -> best checkpoint.

``run_finetune(cfg)`` is what ``accelerate launch recipes/finetune.py`` and ``selfvos finetune`` run:

1. open the training sources (annotated videos, any ``selfvos.data`` spec) and hold out every
   ``data.holdout_every``-th video for validation;
2. build the head by name (``model.type``) and, with ``init``, copy a pretrained backbone trunk (e.g. the
   MuG model of ``recipes/mug_pretrain.py``) into every backbone of the head, logging what was loaded;
3. train with the generic engine on the head's losses: the pseudo-video stage (single frames warped into
   clips) for the first ``data.pseudo_video_fraction`` of the steps, then real clips with the max frame skip
   growing (``data.curriculum``); validation on the held-out videos every ``eval.every`` steps, the best
   J&F exported to ``<output_dir>/best`` (one-shot heads: one-shot from the first mask, per object; zero-shot
   heads: zero-shot, single object; their clips are binary and carry flows, see ``FinetuneConfig``; VIS heads,
   ``training_task`` ``"vis"``: the best YouTube-VIS AP, see ``selfvos.finetune.validation``); under N
   processes each scores its block of the held-out videos, the per-video scores are gathered (the J&F of one
   process), and the main process picks, logs and saves the best;
4. export the last weights to ``<output_dir>/model`` with ``training.json`` (data, init, config), both
   loadable with ``selfvos.from_pretrained`` and servable by ``selfvos segment``.

Resume (``train.resume: auto``) restores the step, the data position, the stage and the best score.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Dict, Tuple

from selfvos.data.video import VideoCollection
from selfvos.finetune.config import FinetuneConfig

log = logging.getLogger(__name__)


def open_videos(cfg: FinetuneConfig) -> Tuple[VideoCollection, VideoCollection]:
    """(training videos, held-out validation videos) of the concatenated sources."""
    from selfvos.data.sources import open_source

    videos = [video for spec in cfg.data.sources for video in open_source(spec)]
    every = cfg.data.holdout_every
    held = [v for i, v in enumerate(videos) if every and i % every == every - 1]
    train = [v for i, v in enumerate(videos) if not (every and i % every == every - 1)]
    source = " + ".join(cfg.data.sources)
    return VideoCollection(train, source=source), VideoCollection(held, source=source)


def head_architecture(cfg: FinetuneConfig) -> str:
    """The architecture name the model config is registered under (``model.type``)."""
    from selfvos.heads.base import HeadConfig

    return HeadConfig.get_choice_name(type(cfg.model))


RECIPE = "recipes/finetune.py"


def write_record(folder: Path, cfg: FinetuneConfig, train: VideoCollection, held: VideoCollection,
                 init_summary: str, step: int) -> Path:
    """Write ``training.json`` beside the exported weights in ``folder`` (read by the model card): recipe, data,
    config, init and the fingerprints of the init and of ``folder``'s weights, plus the fine-tuning facts."""
    from selfvos.hub.record import write_training_record

    return write_training_record(folder, recipe=RECIPE, data=cfg.data.sources, config=cfg, init=cfg.init,
                                 architecture=head_architecture(cfg), step=step, train_videos=train.names,
                                 validation_videos=held.names, init_report=init_summary)


def run_finetune(cfg: FinetuneConfig) -> Path:
    """Fine-tune ``cfg.model`` on ``cfg.data``; returns the exported model folder."""
    from accelerate.utils import set_seed

    from selfvos.backbones.init import init_backbones
    from selfvos.config import to_dict
    from selfvos.data.augment import SupervisedAugment
    from selfvos.data.pseudo_video import PseudoVideoDataset
    from selfvos.data.sampling import SkipCurriculum
    from selfvos.data.supervised import SupervisedClipDataset, collate_objects
    from selfvos.engine.callbacks import BEST_NAME, EvalCallback
    from selfvos.engine.trainer import Trainer, build_accelerator
    from selfvos.finetune.losses import SegmentationLoss
    from selfvos.finetune.stages import StagedDataset, StageSchedule
    from selfvos.finetune.config import head_clip_config, head_task
    from selfvos.finetune.validation import segmentation_scores, validation_metric
    from selfvos.registry import create_model

    # the head's clip options (also set by FinetuneConfig itself; again here for a config edited after creation)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, clip=head_clip_config(cfg.model, cfg.data.clip)))
    accelerator = build_accelerator(cfg.train)
    train_videos, held_videos = open_videos(cfg)
    data = cfg.data
    augment = SupervisedAugment(data.augment_cfg) if data.augment else None
    clips = SupervisedClipDataset(train_videos, data.clip, augment=augment, clips_per_video=data.clips_per_video)
    pseudo = PseudoVideoDataset(train_videos, data.clip, augment=augment, clips_per_video=data.clips_per_video,
                                affine=data.pseudo_video)
    first_steps, video_steps = cfg.stage_steps
    dataset = StagedDataset([pseudo, clips] if first_steps else [clips])
    curriculum = None
    if data.curriculum is not None:
        curriculum = SkipCurriculum(data.curriculum.start, data.curriculum.end, max(video_steps, 1))
    schedule = StageSchedule(dataset, first_steps if len(dataset.datasets) > 1 else 0, curriculum)

    set_seed(cfg.train.seed)  # the same initial weights for the same config
    model = create_model(head_architecture(cfg), cfg.model)
    init_summary = "scratch (random initialisation)"
    if cfg.init:
        report = init_backbones(model, cfg.init)
        init_summary = report.summary()
        if accelerator.is_main_process:
            log.info(init_summary)
    objective = SegmentationLoss(cfg.loss)  # also a callback: the loss schedule follows the step
    callbacks = [schedule, objective]
    task = head_task(cfg.model)
    if cfg.eval.enabled and len(held_videos):
        def evaluate(trained: Any) -> Dict[str, float]:  # every process scores its share of the held-out videos
            return segmentation_scores(trained, held_videos, task, max_side=cfg.eval.max_side, accelerator=accelerator)

        callbacks.append(EvalCallback(evaluate, every=cfg.eval.every, metric=validation_metric(task), mode="max",
                                      distributed=True))
    trainer = Trainer(model, dataset, cfg.train, objective=objective, collate_fn=collate_objects,
                      callbacks=callbacks, run_config={k: v for k, v in to_dict(cfg).items() if k != "train"})
    with trainer:  # the MLflow run ends FINISHED, or FAILED / KILLED when anything below raises
        trainer.train()
        out = trainer.export(Path(cfg.train.output_dir) / "model")  # refuses non-finite weights
        if accelerator.is_main_process:
            write_record(out, cfg, train_videos, held_videos, init_summary, trainer.state.step)
            best = Path(cfg.train.output_dir) / "best"
            if (best / BEST_NAME).is_file():  # the best weights' own record, at the step they were chosen
                best_step = json.loads((best / BEST_NAME).read_text())["step"]
                write_record(best, cfg, train_videos, held_videos, init_summary, best_step)
            log.info("exported the fine-tuned %s (%s) to %s", head_architecture(cfg), task, out)
        accelerator.wait_for_everyone()
    return out
