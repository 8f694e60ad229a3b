"""Label-free adaptation: continue MuG pretraining from a checkpoint on new, unlabeled videos within a
wall-clock budget, and export the adapted model.

``adapt(checkpoint, data, output_dir, minutes=10)`` (``selfvos adapt``) runs the normal recipe
(:func:`selfvos.pretrain.recipe.run_pretraining`: round-0 pseudo-masks of the videos, training with every
objective, bootstrapped relabel passes between rounds, export to ``output_dir/model``) configured as follows:

- architecture: the checkpoint's own model config; every weight starts from the checkpoint, strictly
  (``PretrainConfig.init``: another architecture, a missing or differently shaped tensor is an error);
- data: the clip, objective, pseudo-label, bootstrapping and augmentation settings and the batch size of the
  checkpoint's own run when its ``training.json`` records a pretraining config, else the defaults of the
  DAVIS-2016 CPU recipe (whole frames resized to 128x224 clips); frames are read at most
  :data:`FRAME_MAX_SIDE` px on the longer side (the 427x240 frames that recipe trained on) when the source can
  shrink them; their human masks, if any, are never read (``pseudo.eval_gt`` off);
- optimisation for continued training (:data:`ADAPT_DEFAULTS`): lr 5e-5, a sixth of the pretraining peak
  (3e-4) and about three times its final cosine value (1.5e-5), constant after a 10-step warmup because the
  number of steps a wall-clock budget allows is not known in advance (``train.max_steps`` is only a cap);
  2 rounds with one relabel pass between them and none after the last (nothing would train on it); a
  resumable checkpoint every 50 steps, the newest 2 kept. Any of these takes a dotted override
  (``--train.lr 1e-4``); the adaptation's own knobs are :class:`AdaptConfig` (``--adapt.label_fraction 0.3``).

The budget (``minutes`` of wall-clock time from the call, everything included: loading, pseudo-labels,
training, relabeling, export) is split and enforced so:

1. probe: the round-0 labeler and the relabeler (the checkpoint's model) each label a frame to warm up, then two
   more, timed (with ``train.cpu_threads`` torch threads, as training will use);
2. plan: ``pseudo.frame_step`` is the smallest step up to ``max_frame_step`` whose estimated labelling time
   (round 0 plus the relabel passes) fits in ``label_fraction`` of the time left; when even
   ``max_frame_step`` would leave no time to train, it is an error before anything is written;
3. round 0 runs through the recipe;
4. when each training round starts, :class:`WallClockBudget` gives it the time left until the end of the
   budget, less ``reserve_seconds`` (the final checkpoint and the export) and the estimated time of the
   relabel passes still to come, divided by the rounds left, as the trainer's deadline
   (``Trainer.deadline``); the trainer ends the round when its next step would pass it (at least one step
   per round), saves a resumable checkpoint, and the recipe relabels or exports. A relabel pass's measured
   time replaces the estimate for the passes after it.

What the budget does not bound: the interpreter start and imports before the call; a round's first step,
which always runs (the first step of a process also pays a one-off warm-up, several times a later step), so a
budget already spent when a round starts is exceeded by a step; a relabel pass slower than estimated. ``training.json`` and ``adapt.json`` record the seconds actually used.

Resuming: the same command again continues the run in ``output_dir`` (the recipe's resume: pseudo-label
rounds, training checkpoints) with the frame step of its first session and a fresh budget for what is left;
a finished run is exported again. ``output_dir/adapt.json`` holds the plan and every session (budget,
seconds used, steps); a folder adapting other weights or other data is refused. The exported
``training.json`` records the parent checkpoint and its SHA-256 (``init``, ``init_sha256`` and ``adapt``), the
data, the budget, the seconds used and the steps done.
"""
from __future__ import annotations

import inspect
import logging
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from selfvos.engine.callbacks import Callback
from selfvos.errors import PathLike, SelfvosInputError
from selfvos.pretrain.recipe import PretrainConfig

log = logging.getLogger(__name__)

RECIPE = "selfvos adapt"
PLAN_NAME = "adapt.json"
FRAME_MAX_SIDE = 427  # longer side of the frames the DAVIS-2016 CPU recipe trained on (427x240)
DAVIS_CPU_CLIP_SIZE = (128, 224)  # clip.size of that recipe (recipes/configs/mug_davis16_cpu.yaml)
ADAPT_DEFAULTS: dict[str, Any] = {
    "train.lr": 5e-5,
    "train.warmup_steps": 10,
    "train.schedule": "constant",
    "train.max_steps": 100_000,  # a cap: the wall-clock budget ends training long before it on a CPU
    "train.save_every": 50,
    "train.keep_checkpoints": 2,
    "bootstrap.rounds": 2,
    "bootstrap.relabel_after_last": False,
    "pseudo.eval_gt": False,
}
# settings of the checkpoint's own pretraining run that the adaptation keeps (when its training.json has them)
INHERITED = ("clip", "objective", "pseudo.method", "pseudo.options", "bootstrap", "data.augment",
             "data.augment_cfg", "train.batch_size", "train.grad_accum")
# set from adapt()'s own arguments, never by an override
PROTECTED = ("data.source", "init", "train.output_dir", "train.resume")


@dataclass
class AdaptConfig:
    """The adaptation's own knobs (the recipe's are dotted ``PretrainConfig`` overrides).

    minutes: wall-clock budget of the whole call. label_fraction: share of the time left after the probe
    planned for pseudo-labelling (round 0 + relabel passes); the frame step is chosen to fit it.
    max_frame_step: the sparsest labelling allowed. reserve_seconds: kept free for the final checkpoint and
    the export (under 1 s for the ResNet-18 model on the 2-core CPU; the rest is a margin for a loaded machine).
    """

    minutes: float = 10.0
    label_fraction: float = 0.4
    max_frame_step: int = 10
    reserve_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.minutes < math.inf:
            raise ValueError(f"adapt.minutes must be a positive number of minutes, got {self.minutes}")
        if not 0 < self.label_fraction < 1:
            raise ValueError(f"adapt.label_fraction must be in (0, 1), got {self.label_fraction}")
        if self.max_frame_step < 1:
            raise ValueError(f"adapt.max_frame_step must be >= 1, got {self.max_frame_step}")
        if not 0 <= self.reserve_seconds < math.inf:
            raise ValueError(f"adapt.reserve_seconds must be >= 0, got {self.reserve_seconds}")


class WallClockBudget(Callback):
    """Gives each training round of a bootstrapped run its share of the time left until ``end``.

    At the start of round r the trainer's deadline becomes ``now + (end - now - relabel_seconds * passes
    still to come) / rounds left`` (``time.monotonic()`` values; never before ``now``, so a late round still
    makes one step). After a round followed by a relabel pass, the pass's measured time replaces
    ``relabel_seconds``. ``shares`` lists the seconds given to each round, ``start_step`` is the step the first
    round of this session started at (None before it).
    """

    def __init__(self, end: float, rounds: int, relabel_seconds: float, relabel_after_last: bool) -> None:
        self.end, self.rounds, self.relabel_seconds = end, rounds, relabel_seconds
        self.relabel_after_last = relabel_after_last
        self.shares: list[float] = []
        self.start_step: int | None = None
        self._last_step_end = time.monotonic()

    def passes_from(self, round_index: int) -> int:
        """Relabel passes that follow rounds ``round_index`` .. ``rounds - 1``."""
        return sum(1 for r in range(round_index, self.rounds) if r + 1 < self.rounds or self.relabel_after_last)

    def on_train_start(self, trainer: Any) -> None:
        now = time.monotonic()
        current = trainer.state.round
        left = max(1, self.rounds - current)
        share = max(0.0, (self.end - now - self.relabel_seconds * self.passes_from(current)) / left)
        trainer.deadline = now + share
        self.shares.append(share)
        self.start_step = trainer.state.step if self.start_step is None else self.start_step
        self._last_step_end = now
        log.info("round %d: %.0f s of training (%.0f s of the budget left)", current, share, self.end - now)

    def on_step_end(self, trainer: Any, metrics: Mapping[str, float]) -> None:
        self._last_step_end = time.monotonic()

    def on_round_end(self, trainer: Any, round_index: int) -> None:
        if self.passes_from(round_index) > self.passes_from(round_index + 1):  # a relabel pass just ran
            self.relabel_seconds = time.monotonic() - self._last_step_end


def labelled_frames(lengths: Sequence[int], frame_step: int) -> int:
    """Frames labelled with every ``frame_step``-th frame of videos of ``lengths`` frames (frame 0 included)."""
    return sum(math.ceil(n / frame_step) for n in lengths)


def choose_frame_step(lengths: Sequence[int], label_seconds: float, relabel_seconds: float, passes: int,
                      seconds: float, label_fraction: float, max_frame_step: int) -> int:
    """The smallest frame step (1 .. ``max_frame_step``) whose labelling, at ``label_seconds`` per frame for
    round 0 and ``relabel_seconds`` for each of ``passes`` relabel passes, fits in ``label_fraction *
    seconds``; ``max_frame_step`` when none does, unless its labelling alone would fill ``seconds`` (then a
    ``SelfvosInputError`` on ``--minutes``)."""
    per_frame = label_seconds + passes * relabel_seconds
    for step in range(1, max_frame_step + 1):
        if labelled_frames(lengths, step) * per_frame <= label_fraction * seconds:
            return step
    needed = labelled_frames(lengths, max_frame_step) * per_frame
    if needed >= seconds:
        raise SelfvosInputError("--minutes", (
            f"the budget leaves {max(seconds, 0):.0f} s after loading, but pseudo-labelling 1 frame in "
            f"{max_frame_step} of {sum(lengths)} frames ({passes + 1} passes) needs about {needed:.0f} s alone; "
            "give more minutes or fewer or shorter videos"))
    return max_frame_step


def _get(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        tree = tree[part]
    tree[last] = value


def parent_run_config(checkpoint: str) -> PretrainConfig | None:
    """The pretraining config recorded in the checkpoint folder's ``training.json``; None when there is none
    (or it is not a pretraining config: a warning says so)."""
    from selfvos.config import ConfigError, from_dict
    from selfvos.hub.record import TRAINING_NAME, read_training_record

    folder = Path(checkpoint).expanduser()
    if not folder.is_dir():
        return None
    config = read_training_record(folder).get("config")
    if not isinstance(config, dict):
        return None
    try:
        return from_dict(PretrainConfig, config, where=str(folder / TRAINING_NAME))
    except ConfigError as err:
        log.warning("%s; using the DAVIS-2016 CPU recipe's clip settings instead", err)
        return None


def source_takes_max_side(data: str) -> bool:
    """Whether the data source of spec ``data`` can shrink frames (has a ``max_side`` option)."""
    from selfvos.data.sources import parse_spec
    from selfvos.registry import SOURCES

    name, _ = parse_spec(data)
    return "max_side" in inspect.signature(SOURCES.get(name)).parameters


def override_keys(overrides: Mapping[str, Any] | Sequence[str]) -> list[str]:
    """The dotted keys of recipe overrides given as a mapping or as ``--key VALUE`` tokens."""
    from selfvos.config import parse_overrides

    return list(overrides) if isinstance(overrides, Mapping) else list(parse_overrides(list(overrides)))


def build_config(checkpoint: str, parent_config: Any, data: str, output_dir: PathLike,
                 overrides: Mapping[str, Any] | Sequence[str] = ()) -> PretrainConfig:
    """The recipe config of an adaptation: the parent's architecture (``parent_config``, its ``MuGConfig``)
    and run settings, :data:`ADAPT_DEFAULTS`, the data and output folder, then the user's dotted overrides."""
    from selfvos.config import ConfigError, apply_overrides, from_dict, to_dict

    protected = sorted(set(override_keys(overrides)) & set(PROTECTED))
    if protected:
        raise ConfigError(protected[0], "set by adapt itself (--checkpoint, --data, --out)")
    plain = to_dict(PretrainConfig())
    parent_run = parent_run_config(checkpoint)
    if parent_run is not None:
        inherited = to_dict(parent_run)
        for dotted in INHERITED:
            _set(plain, dotted, _get(inherited, dotted))
    else:
        plain["clip"]["size"] = list(DAVIS_CPU_CLIP_SIZE)
    plain["model"] = to_dict(parent_config)
    plain["model"]["backbone"]["pretrained"] = None  # every weight comes from the checkpoint
    for dotted, value in ADAPT_DEFAULTS.items():
        _set(plain, dotted, value)
    plain["data"]["source"] = data
    plain["data"]["options"] = {"max_side": FRAME_MAX_SIDE} if source_takes_max_side(data) else {}
    plain["init"] = checkpoint
    plain["train"]["output_dir"] = str(output_dir)
    plain["train"]["resume"] = "auto"
    return apply_overrides(from_dict(PretrainConfig, plain), overrides)


def split_overrides(overrides: Mapping[str, Any] | Sequence[str]) -> tuple[Any, Any]:
    """``(AdaptConfig overrides, recipe overrides)``: ``adapt.<field>`` keys (and, in a mapping, bare
    :class:`AdaptConfig` field names) go to the first, every other dotted key to the second; a token list stays
    a token list (``--key VALUE`` or ``--key=VALUE``)."""
    fields = set(AdaptConfig.__dataclass_fields__)
    if isinstance(overrides, Mapping):
        own = {k.removeprefix("adapt."): v for k, v in overrides.items() if k.startswith("adapt.") or k in fields}
        rest = {k: v for k, v in overrides.items() if not (k.startswith("adapt.") or k in fields)}
        return own, rest
    own_tokens: list[str] = []
    rest_tokens: list[str] = []
    target, wants_value = rest_tokens, False
    for token in overrides:
        if token.startswith("--"):
            target = own_tokens if token.startswith("--adapt.") else rest_tokens
            token = "--" + token[len("--adapt."):] if target is own_tokens else token
            wants_value = "=" not in token
        elif not wants_value:
            raise SelfvosInputError(token, "unexpected argument; overrides look like --section.key VALUE")
        else:
            wants_value = False
        target.append(token)
    return own_tokens, rest_tokens


def _mean_seconds(labelers: Sequence[Any], video: Any, indices: Sequence[int]) -> float:
    """Mean seconds of the calls ``labeler(video, index)`` after the first one (a warm-up: one-off set-up)."""
    seconds = []
    for labeler, index in zip(labelers, indices):
        start = time.perf_counter()
        labeler(video, index)
        seconds.append(time.perf_counter() - start)
    return statistics.fmean(seconds[1:])


def probe_seconds_per_frame(cfg: PretrainConfig, collection: Any, parent: Any) -> tuple[float, float]:
    """``(round-0 labeler, relabeler)`` seconds per labelled frame: the mean of 2 calls after a warm-up one,
    on the middle frames of the first video (the labeler on consecutive frames, a fresh relabeler with
    ``parent`` as the model on the same frame each time). A relabeler call predicts a batch of frames ahead,
    so its time is an upper bound per labelled frame."""
    from selfvos.pretrain.bootstrap import ModelRelabeler
    from selfvos.registry import PSEUDO_LABELERS

    video = collection[0]
    middle = len(video) // 2
    labeler = PSEUDO_LABELERS.create(cfg.pseudo.method, **cfg.pseudo.options)
    calls = 3
    label = _mean_seconds([labeler] * calls, video, [min(middle + i, len(video) - 1) for i in range(calls)])
    relabelers = [ModelRelabeler(parent, cfg.clip.frame_size, cfg.bootstrap, round_index=0) for _ in range(calls)]
    relabel = _mean_seconds(relabelers, video, [middle] * calls)
    return label, relabel


def load_parent(checkpoint: str) -> Any:
    """The MuG model of ``checkpoint`` (strict ``selfvos.from_pretrained``); another architecture is an error."""
    import selfvos
    from selfvos.pretrain import MuGModel

    model = selfvos.from_pretrained(checkpoint)
    if not isinstance(model, MuGModel):
        raise SelfvosInputError(checkpoint, f"is a {type(model).architecture!r} model; adapt continues MuG "
                                            "pretraining and needs a 'mug' checkpoint")
    return model


def check_init(cfg: PretrainConfig, checkpoint: str) -> None:
    """Refuse, before any work, a config whose model the checkpoint cannot initialise strictly (a ``model.*``
    override that changes a shape): the recipe's own strict load, on a throw-away model."""
    from selfvos.pretrain import MuGModel
    from selfvos.pretrain.recipe import init_from_checkpoint

    init_from_checkpoint(MuGModel(cfg.model), checkpoint)


def read_plan(output_dir: Path, checkpoint: str, digest: str, data: str) -> dict[str, Any] | None:
    """The plan of an earlier session in ``output_dir``; a plan for other weights or other data is an error."""
    from selfvos.hub.files import read_json_object

    path = output_dir / PLAN_NAME
    if not path.is_file():
        return None
    plan = read_json_object(path, "adaptation plan")
    if plan.get("checkpoint_sha256") != digest or plan.get("data") != data:
        raise SelfvosInputError(output_dir, (
            f"holds the adaptation of {plan.get('checkpoint')} (weights {str(plan.get('checkpoint_sha256'))[:12]}) "
            f"to {plan.get('data')}, not of {checkpoint} (weights {digest[:12]}) to {data}; choose another --out"))
    return plan


def save_plan(output_dir: Path, plan: dict[str, Any]) -> Path:
    """Write ``output_dir/adapt.json`` atomically."""
    from selfvos.atomic import atomic_write_json

    output_dir.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(output_dir / PLAN_NAME, plan, indent=2, sort_keys=False, newline=True)


def make_plan(cfg: PretrainConfig, settings: AdaptConfig, collection: Any, parent: Any, checkpoint: str,
              digest: str, data: str, seconds_left: float, user_step: bool) -> dict[str, Any]:
    """Probe the labelling costs and choose the frame step (kept when the user set ``pseudo.frame_step``)."""
    label_s, relabel_s = probe_seconds_per_frame(cfg, collection, parent)
    passes = WallClockBudget(0.0, cfg.bootstrap.rounds, 0.0, cfg.bootstrap.relabel_after_last).passes_from(0)
    lengths = [len(video) for video in collection]
    step = cfg.pseudo.frame_step if user_step else choose_frame_step(
        lengths, label_s, relabel_s, passes, seconds_left, settings.label_fraction, settings.max_frame_step)
    return {"checkpoint": checkpoint, "checkpoint_sha256": digest, "data": data, "videos": collection.names,
            "frames": sum(lengths), "frame_step": step, "labelled_frames": labelled_frames(lengths, step),
            "probe_seconds_per_frame": {"label": label_s, "relabel": relabel_s}, "sessions": []}


def open_videos(cfg: PretrainConfig, data: str) -> Any:
    """The collection the recipe will train on; one without a single video is an error."""
    from selfvos.data.sources import open_source

    collection = open_source(cfg.data.source, **cfg.data.options)
    if len(collection) == 0 or not any(len(video) for video in collection):
        raise SelfvosInputError(data, "no videos (or only empty ones) to adapt to")
    return collection


def adapt(checkpoint: PathLike, data: str, output_dir: PathLike, minutes: float = AdaptConfig.minutes,
          **overrides: Any) -> Path:
    """Adapt ``checkpoint`` to the unlabeled videos of ``data`` (a ``selfvos.data`` spec, e.g.
    ``video:my_videos/``) within ``minutes`` of wall-clock time; returns the exported ``output_dir/model``.

    ``overrides``: :class:`AdaptConfig` fields by name (``label_fraction=0.3``) and dotted recipe overrides
    (``**{"train.batch_size": 2}``); see the module docstring for the defaults and the budget.
    """
    own, recipe = split_overrides(overrides)
    return run_adapt(str(checkpoint), data, output_dir, {"minutes": minutes, **own}, recipe)


def run_adapt(checkpoint: str, data: str, output_dir: PathLike,
              settings: Mapping[str, Any] | Sequence[str] = (),
              overrides: Mapping[str, Any] | Sequence[str] = ()) -> Path:
    """:func:`adapt` with ``settings`` (:class:`AdaptConfig` overrides) and recipe ``overrides`` each given as
    a mapping or as ``--key VALUE`` tokens (what ``selfvos adapt`` passes)."""
    import torch

    from selfvos.config import apply_overrides
    from selfvos.engine.config import resolve_cpu_threads
    from selfvos.hub.record import weights_sha256
    from selfvos.pretrain.recipe import run_pretraining

    started = time.monotonic()
    config = apply_overrides(AdaptConfig(), settings)
    output_dir = Path(output_dir)
    parent = load_parent(checkpoint)
    digest = weights_sha256(checkpoint)
    cfg = build_config(checkpoint, parent.config, data, output_dir, overrides)
    torch.set_num_threads(resolve_cpu_threads(cfg.train.cpu_threads, 1))  # the probe times what training will use
    check_init(cfg, checkpoint)
    collection = open_videos(cfg, data)
    end = started + 60.0 * config.minutes - config.reserve_seconds
    plan = read_plan(output_dir, checkpoint, digest, data)
    if plan is None:
        user_step = "pseudo.frame_step" in override_keys(overrides)
        plan = make_plan(cfg, config, collection, parent, checkpoint, digest, data, end - time.monotonic(),
                         user_step)
        save_plan(output_dir, plan)  # before round 0: an interrupted session resumes with the same frame step
    cfg.pseudo.frame_step = plan["frame_step"]
    del parent
    relabel_estimate = plan["labelled_frames"] * plan["probe_seconds_per_frame"]["relabel"]
    log.info("adapting %s (weights %s) to %d video(s), %d frames, in %.1f min: frame step %d for pseudo-labels "
             "(%d frames), about %.0f s per relabel pass", checkpoint, digest[:12], len(plan["videos"]),
             plan["frames"], config.minutes, plan["frame_step"], plan["labelled_frames"], relabel_estimate)
    budget = WallClockBudget(end, cfg.bootstrap.rounds, relabel_estimate, cfg.bootstrap.relabel_after_last)
    out = run_pretraining(cfg, callbacks=[budget])
    write_records(out, cfg, plan, output_dir, config, budget, time.monotonic() - started)
    return out


def write_records(out: Path, cfg: PretrainConfig, plan: dict[str, Any], output_dir: Path, config: AdaptConfig,
                  budget: WallClockBudget, seconds: float) -> None:
    """Append this session to ``adapt.json`` and write the adapted model's ``training.json``."""
    from selfvos.hub.record import read_training_record, write_training_record

    recipe_record = read_training_record(out)
    step = int(recipe_record.get("step", 0))
    start_step = step if budget.start_step is None else budget.start_step
    plan["sessions"].append({"minutes": config.minutes, "seconds": round(seconds, 1), "start_step": start_step,
                             "end_step": step, "round_seconds": [round(s, 1) for s in budget.shares],
                             "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    save_plan(output_dir, plan)
    summary = {"parent": plan["checkpoint"], "parent_sha256": plan["checkpoint_sha256"],
               "budget_minutes": config.minutes, "seconds_used": round(seconds, 1), "steps": step,
               "frame_step": plan["frame_step"], "labelled_frames": plan["labelled_frames"],
               "sessions": plan["sessions"], "settings": asdict(config)}
    write_training_record(out, recipe=RECIPE, data=[plan["data"]], config=cfg, init=plan["checkpoint"],
                          step=step, rounds=recipe_record.get("rounds"), videos=plan["videos"],
                          pseudo_label_store=str(cfg.store_dir), adapt=summary)
    log.info("adapted model: %s (%d steps, %.0f of %.0f s)", out, step, seconds, 60 * config.minutes)
