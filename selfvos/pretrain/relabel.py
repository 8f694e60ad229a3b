"""Bootstrapped relabeling between the training rounds of the MuG recipe (:mod:`selfvos.pretrain.recipe`).

:class:`RoundMaskProvider` serves the clip sampler the pseudo-masks of the current round;
:class:`RelabelCallback` runs at the end of every training round: every process relabels its shard of the
videos with the trained model (the unwrapped module: the same weights on every rank under DDP) into the next
store round (:func:`selfvos.pseudo.generate_pseudo_labels` with the accelerator's
:class:`~selfvos.pseudo.generate.ShardPlan`: resumable per video, atomic, one merged manifest written by the
main process), the main process logs its quality and a gallery to MLflow, and all processes move on to that
round together. A model holding NaN/inf weights is refused (``NonFiniteWeightsError``) before a single mask
is written.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import numpy as np

from selfvos.data.video import VideoCollection
from selfvos.engine.trainer import Callback, Trainer
from selfvos.pseudo.store import PseudoLabelStore

log = logging.getLogger(__name__)


class RoundMaskProvider:
    """``(video_name, frame_index) -> soft mask | None`` reading store round ``self.round``.

    The round is a plain attribute set by the driver before each training round; DataLoader workers are
    re-created for every round (the trainer re-iterates its loader), so they see the new value.
    """

    def __init__(self, store: PseudoLabelStore, round_index: int = 0) -> None:
        self.store, self.round = store, round_index

    def __call__(self, video_name: str, frame_index: int) -> Optional[np.ndarray]:
        path = self.store.frame_path(self.round, video_name, int(frame_index))
        return self.store.read(self.round, video_name, int(frame_index)) if path.is_file() else None


def make_gallery_image(collection: VideoCollection, store: PseudoLabelStore, round_index: int, videos: int):
    """A PIL gallery (frame | pseudo-mask | GT) of one frame per video for the first ``videos`` videos."""
    import tempfile
    from pathlib import Path

    from PIL import Image

    from selfvos.pseudo.gallery import make_gallery

    names = collection.names[:videos]
    with tempfile.TemporaryDirectory() as tmp:
        path = make_gallery(collection, RoundMaskProvider(store, round_index), Path(tmp) / "g.png", videos=names)
        return Image.open(path).copy()


def rounds_in_place(accelerator: Any, store: PseudoLabelStore) -> List[int]:
    """The store's complete rounds, the same list on every process: the main process first tidies what a
    killed run left (:meth:`PseudoLabelStore.clean_stale`: e.g. a finished round not yet moved into place),
    then every process looks (nothing is written between that barrier and the next round's build)."""
    if accelerator.is_main_process:
        store.clean_stale()
    accelerator.wait_for_everyone()
    return store.rounds()


class RelabelCallback(Callback):
    """After training round r, every process relabels its shard of the videos into store round r + 1; the main
    process logs the round's quality."""

    def __init__(self, cfg: Any, collection: VideoCollection, store: PseudoLabelStore,
                 provider: RoundMaskProvider) -> None:
        self.cfg, self.collection, self.store, self.provider = cfg, collection, store, provider
        self.history: Dict[int, Optional[float]] = {}

    def on_round_end(self, trainer: Trainer, round_index: int) -> None:
        from selfvos.pretrain.bootstrap import ModelRelabeler
        from selfvos.pseudo import generate_pseudo_labels
        from selfvos.pseudo.generate import ShardPlan

        if round_index + 1 >= self.cfg.bootstrap.rounds and not self.cfg.bootstrap.relabel_after_last:
            return
        acc = trainer.accelerator
        acc.wait_for_everyone()
        target = round_index + 1
        model = acc.unwrap_model(trainer.module).model  # the same weights on every process under DDP
        # a NaN model would write a whole round of garbage masks that the next round then trains on
        trainer.check_finite_weights(self.store.round_dir(target), f"relabel round {target}", model)
        if target in rounds_in_place(acc, self.store):
            # only possible after an interruption between relabeling and the round's checkpoint;
            # resume is exact, so the same weights produced these masks
            log.info("pseudo-label round %d already complete; not relabeling again", target)
            manifest = self.store.manifest(target)
        else:
            was_training = model.training
            model.eval()
            relabeler = ModelRelabeler(model, self.cfg.clip.frame_size, self.cfg.bootstrap,
                                       previous=RoundMaskProvider(self.store, round_index), round_index=round_index)
            manifest = generate_pseudo_labels(self.collection, self.store, target, relabeler,
                                              frame_step=self.cfg.pseudo.frame_step, eval_gt=self.cfg.pseudo.eval_gt,
                                              progress=acc.is_main_process, shard=ShardPlan.from_state(acc))
            model.train(was_training)
        quality = (manifest.get("quality") or {}).get("mean_j")
        self.history[target] = quality
        if acc.is_main_process:
            if quality is not None:
                trainer.tracker.log_metrics({"round/pseudo_mask_J": quality}, step=target)
                log.info("pseudo-label round %d: mean J %.4f against the human masks", target, quality)
            trainer.tracker.log_image(make_gallery_image(self.collection, self.store, target,
                                                         self.cfg.pseudo.gallery_videos),
                                      f"pseudo_labels/round_{target:03d}.png")
        acc.wait_for_everyone()
