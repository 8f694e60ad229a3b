"""Scoring a model on a video collection, as the benchmark scripts do: load it, segment, evaluate, print.

>>> model = load_model("runs/mug_davis16_cpu/model")       # exported folder, Hub id or step_XXXXXXX checkpoint
>>> scores = run_variant(model, collection, "one-shot", Path("out/os"), gt_dir=gt, one_shot=OneShotConfig())
>>> print_table({"one-shot": scores})

:func:`run_variant` builds ``Segmenter(model, task, **settings)`` for every video, so it works for any model
the :class:`~selfvos.inference.Segmenter` accepts (MuG or a head) with that model's own settings; the masks
are written as palette PNGs and scored with the official-parity evaluator (:mod:`selfvos.eval`). Two
model-free floors are built in: ``task="copy"`` (the first-frame mask on every frame) and ``task="pseudo"``
(the label-free pseudo-label engine, ``FusedSaliency(**settings)``, thresholded at 0.5).

Every result row a benchmark writes for a checkpoint records ``weights_sha256(checkpoint)`` (the SHA-256 of
the ``model.safetensors`` it was measured on, :func:`selfvos.hub.record.weights_sha256`): ``selfvos push
--benchmark-json`` puts a row on a model card only when it equals the pushed weights'. Rows of the model-free
floors record ``None``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Mapping, Sequence, Union

from selfvos.errors import PathLike, SelfvosInputError
from selfvos.hub.record import weights_sha256

BASELINE_TASKS = ("copy", "pseudo")

# OneShotConfig fields the pretraining-recipe and granularity-ablation tables (docs/results.md) were scored
# with; the scripts that extend those tables use them so that new rows stay comparable with the old ones.
EARLY_ONE_SHOT: Dict[str, Any] = {"flip_average": False, "radius": 12, "num_previous": 5}


def load_training_checkpoint(folder: PathLike, config: Any = None):
    """The MuG model of a resumable ``step_XXXXXXX`` training checkpoint (the ``model.`` part of the train step).

    ``config`` describes the run: a YAML path or a :class:`~selfvos.pretrain.recipe.PretrainConfig`. When None,
    the run's exported model (``<run>/model/config.json``, next to ``<run>/checkpoints/``) gives the model
    config; without either the model cannot be rebuilt and this is an error.
    """
    from safetensors.torch import load_file

    from selfvos.pretrain import MuGModel

    folder = Path(folder)
    model = MuGModel(_model_config(folder, config))
    weights = load_file(folder / "model.safetensors")
    state = {k[len("model."):]: v for k, v in weights.items() if k.startswith("model.")}
    model.load_state_dict(state, strict=True)
    return model.eval()


def _model_config(folder: Path, config: Any):
    from selfvos.config import from_dict, load_yaml
    from selfvos.hub import read_config
    from selfvos.pretrain import MuGConfig
    from selfvos.pretrain.recipe import PretrainConfig

    if isinstance(config, PretrainConfig):
        return config.model
    if config is not None:
        return load_yaml(PretrainConfig, config).model
    exported = folder.parent.parent / "model" / "config.json"
    if not exported.is_file():
        raise SelfvosInputError(folder, "a training checkpoint needs its run's config (config=YAML path) or the "
                                        f"run's exported model at {exported.parent}")
    _, model_config, _ = read_config(exported)
    return from_dict(MuGConfig, model_config, where=str(exported))


def load_model(spec: Union[str, PathLike], config: Any = None):
    """A model in eval mode from an exported folder or Hub id (``selfvos.from_pretrained``), or from a
    resumable ``step_XXXXXXX`` training checkpoint of a MuG run (see :func:`load_training_checkpoint`)."""
    import selfvos

    path = Path(spec)
    if (path / "config.json").is_file() or not path.exists():
        return selfvos.from_pretrained(str(spec)).eval()
    if (path / "model.safetensors").is_file():
        return load_training_checkpoint(path, config)
    raise SelfvosInputError(path, "neither an exported model (config.json) nor a training checkpoint "
                                  "(model.safetensors)")


def row_weights(task: str, digest: str) -> Dict[str, Any]:
    """``{"weights_sha256": ...}`` for a result row of ``task``: ``digest`` when the model's weights made it,
    ``None`` for a model-free floor of :data:`BASELINE_TASKS`."""
    return {"weights_sha256": None if task in BASELINE_TASKS else digest}


def _segment_baseline(task: str, video: Any, first: Any, settings: Mapping[str, Any]):
    if task == "copy":
        return [first] * len(video), 0.0
    from selfvos.pseudo.fusion import FusedSaliency

    labeler = FusedSaliency(**settings)
    start = time.perf_counter()
    masks = [labeler(video, t) >= 0.5 for t in range(len(video))]
    return masks, time.perf_counter() - start


def run_variant(model: Any, collection: Iterable[Any], task: str, out: PathLike, *, gt_dir: PathLike,
                model_for: Callable[[Any, Any], Any] | None = None,
                first_mask: Callable[[Any], Any] | None = None, **settings: Any) -> Dict[str, Any]:
    """Segment every video of ``collection`` into ``out/<video>/<frame>.png`` and score it against
    ``gt_dir/<video>/<frame>.png`` (official protocol).

    ``task`` is a :class:`~selfvos.inference.Segmenter` task (``"zero-shot"``, ``"one-shot"``, ``"auto"``;
    ``settings`` are its keyword arguments), a floor of :data:`BASELINE_TASKS` (``model`` unused), or a
    label-free whole-video method as a callable ``task(video) -> masks`` (e.g. IET; ``model`` unused, the
    callable holds what it needs). Every task but zero-shot and callables gets the first-frame annotation of
    each video (void as background), or ``first_mask(video)`` ((H, W) uint8 ids) when that function is given
    (e.g. a mask made from prompts).
    ``model_for(video, first_mask) -> model``, when given, makes the model of each video (e.g. a copy fine-tuned
    on its first frame, :mod:`selfvos.inference.online`) for a Segmenter task; its time is not segmentation time.
    Returns ``{"J&F", "J", "F"}`` in percent, ``"frames_per_s"`` (segmentation time only; None for
    ``"copy"``) and ``"per_sequence_JF"`` ({video: J&F in percent}); with ``model_for`` also
    ``"model_for_s"`` ({video: seconds ``model_for`` took}).
    """
    import numpy as np

    from selfvos.data.video import first_frame_mask
    from selfvos.eval.io import evaluate_folders
    from selfvos.eval.report import to_dict
    from selfvos.inference import Segmenter
    from selfvos.inference.io import write_mask_folder

    out = Path(out)
    frames, seconds, names, prepared = 0, 0.0, [], {}
    for video in collection:
        first = None
        if task != "zero-shot" and not callable(task):
            first = first_frame_mask(video) if first_mask is None else first_mask(video)
        if callable(task):
            start = time.perf_counter()
            masks = list(task(video))
            spent = time.perf_counter() - start
        elif task in BASELINE_TASKS:
            masks, spent = _segment_baseline(task, video, first, settings)
        else:
            video_model = model
            if model_for is not None:
                start = time.perf_counter()
                video_model = model_for(video, first)
                prepared[video.name] = time.perf_counter() - start
            segmenter = Segmenter(video_model, task, **settings)
            start = time.perf_counter()
            masks = list(segmenter.segment_video(video, first_mask=first, progress=False))
            spent = time.perf_counter() - start
        seconds += spent
        frames += len(video)
        names.append(video.name)
        write_mask_folder(out / video.name, video.frame_names, [np.asarray(m, np.uint8) for m in masks])
    result = to_dict(evaluate_folders(out, gt_dir, sequences=names, protocol="official"))
    scores = {"J&F": 100 * result["mean"]["JF"], "J": 100 * result["mean"]["J"], "F": 100 * result["mean"]["F"],
              "frames_per_s": frames / seconds if seconds else None,
              "per_sequence_JF": {s: 50 * (v["J"] + v["F"]) for s, v in result["sequences"].items()}}
    return {**scores, "model_for_s": prepared} if model_for is not None else scores


def choose_splits(text: str, available: Mapping[str, Sequence[Any]]) -> list | None:
    """``--splits``: the comma-separated split names of ``text`` (an unknown one exits with the choices); None,
    after a "skipped" line on stderr, when the data folder of a chosen split (the first item of its entry in
    ``available``) is missing, so a benchmark run without ``../shared/data`` ends cleanly."""
    import sys

    splits = [s for s in text.split(",") if s]
    unknown = [s for s in splits if s not in available]
    if unknown:
        raise SystemExit(f"--splits: unknown {unknown}; choose from {sorted(available)}")
    missing = [str(available[s][0]) for s in splits if not Path(available[s][0]).is_dir()]
    if missing:
        print(f"skipped: {', '.join(missing)} not found", file=sys.stderr)
        return None
    return splits


def wanted(name: str, only: str) -> bool:
    """``--only``: a comma-separated list of substrings of variant names; empty = every variant."""
    parts = [w for w in only.split(",") if w]
    return not parts or any(w in name for w in parts)


def print_table(results: Mapping[str, Mapping[str, Any]], min_width: int = 52) -> None:
    """One row per variant: J&F, J, F (percent) and frames/s ("-" when not timed)."""
    width = max([min_width, *map(len, results)])
    print(f"\n{'variant':<{width}} {'J&F':>6} {'J':>6} {'F':>6} {'frames/s':>9}")
    for key, r in results.items():
        fps = f"{r['frames_per_s']:.2f}" if r["frames_per_s"] else "-"
        print(f"{key:<{width}} {r['J&F']:6.1f} {r['J']:6.1f} {r['F']:6.1f} {fps:>9}")


def print_columns(results: Mapping[str, Mapping[str, Any]], columns: Sequence[str], label: str) -> None:
    """One row per entry of ``results``, one J&F column per task in ``columns`` (``row[task]["J&F"]``)."""
    width = max([len(label), *map(len, results)])
    col = max(map(len, columns))
    print(f"\n{label:<{width}} " + " ".join(f"{t:>{col}}" for t in columns))
    for name, row in results.items():
        print(f"{name:<{width}} " + " ".join(f"{row[t]['J&F']:>{col}.1f}" for t in columns))


__all__ = ["BASELINE_TASKS", "EARLY_ONE_SHOT", "load_model", "load_training_checkpoint", "print_columns",
           "print_table", "row_weights", "run_variant", "wanted", "weights_sha256"]
