"""Model cards: ``selfvos/hub/templates/model_card.md`` filled from a checkpoint and (optionally) a benchmark JSON.

The benchmark JSON is one result or a list of them (or ``{"results": [...]}``)::

    {"task": "zero-shot-vos", "dataset": "DAVIS-2016", "split": "val",
     "metrics": {"J&F": 61.2, "J": 62.0, "F": 60.4}, "command": "python benchmarks/davis16.py ..."}

Its numbers become the card's ``model-index`` and an Evaluation table. Without it the card says
"not measured" and carries no ``model-index``: numbers are never invented. An optional ``training.json``
in the checkpoint directory (``{"datasets": [...], "recipe": "...", ...}``) fills the training section.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import yaml

from selfvos.errors import SelfvosInputError
from selfvos.hub.files import CONFIG_NAME, read_config
from selfvos.hub.papers import BIBTEX, describe
from selfvos.hub.weights import WEIGHTS_NAME

# Package data, so an installed (non-editable) selfvos finds it; ``hub/model_card.md`` is the same file
# kept next to the publishing docs (tests/hub/test_hub_card.py checks that the two agree).
TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "model_card.md"
TRAINING_NAME = "training.json"
LICENSE = "apache-2.0"


@dataclass
class BenchmarkResult:
    """One measured result: ``metrics`` maps a metric name (``"J&F"``) to its value."""

    task: str
    dataset: str
    metrics: Dict[str, float]
    split: Optional[str] = None
    command: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)


def load_benchmarks(path: Optional[Union[str, Path]]) -> List[BenchmarkResult]:
    """Parse a benchmark JSON (``None`` -> no results); malformed content names the file and the entry."""
    if path is None:
        return []
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SelfvosInputError(path, f"not a readable benchmark JSON ({err})") from None
    entries = data.get("results", data) if isinstance(data, dict) else data
    entries = [entries] if isinstance(entries, dict) else entries
    if not isinstance(entries, list) or not entries:
        raise SelfvosInputError(path, "expected a result object, a list of them, or {'results': [...]}")
    return [_parse_result(path, i, entry) for i, entry in enumerate(entries)]


def _parse_result(path: Path, index: int, entry: Any) -> BenchmarkResult:
    where = f"result {index}"
    if not isinstance(entry, dict):
        raise SelfvosInputError(path, f"{where}: expected an object, got {type(entry).__name__}")
    for key in ("task", "dataset"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise SelfvosInputError(path, f"{where}: needs a non-empty string {key!r}")
    metrics = entry.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise SelfvosInputError(path, f"{where}: needs a non-empty 'metrics' object")
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SelfvosInputError(path, f"{where}: metric {name!r} = {value!r} is not a finite number")
    extra = {k: v for k, v in entry.items() if k not in ("task", "dataset", "metrics", "split", "command")}
    return BenchmarkResult(entry["task"], entry["dataset"], {k: float(v) for k, v in metrics.items()},
                           entry.get("split"), entry.get("command"), extra)


def count_values(weights_path: Path) -> int:
    """Number of stored values (parameters + buffers, tied tensors once) from the safetensors header."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(weights_path), framework="pt") as handle:
        for key in handle.keys():
            total += math.prod(handle.get_slice(key).get_shape())
    return total


def render_model_card(
    checkpoint_dir: Union[str, Path],
    repo_id: str,
    benchmark_json: Optional[Union[str, Path]] = None,
    template_path: Union[str, Path] = TEMPLATE_PATH,
) -> str:
    """The README.md text (YAML metadata + markdown) for the checkpoint in ``checkpoint_dir``."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    checkpoint_dir = Path(checkpoint_dir)
    architecture, config, document = read_config(checkpoint_dir / CONFIG_NAME)
    results = load_benchmarks(benchmark_json)
    training = _read_training(checkpoint_dir / TRAINING_NAME)
    description, limitations, paper_keys = describe(architecture)
    if any("davis" in r.dataset.lower() for r in results):
        paper_keys.append("davis")
    model_name = repo_id.split("/")[-1]
    eval_results = [
        EvalResult(task_type=r.task, dataset_type=r.dataset, dataset_name=r.dataset, dataset_split=r.split,
                   metric_type=name, metric_name=name, metric_value=value)
        for r in results for name, value in r.metrics.items()
    ]
    card_data = ModelCardData(
        model_name=model_name, library_name="selfvos", license=LICENSE,
        tags=["selfvos", "video-object-segmentation", "self-supervised", architecture],
        eval_results=eval_results or None,
    )
    template = Path(template_path)
    if not template.is_file():
        raise SelfvosInputError(template, "model card template not found")
    card = ModelCard.from_template(
        card_data,
        template_path=str(template),
        model_name=model_name,
        repo_id=repo_id,
        description=description,
        architecture=architecture,
        class_path=_class_path(architecture),
        class_name=_class_path(architecture).rsplit(".", 1)[-1],
        parameters=_format_count(count_values(checkpoint_dir / WEIGHTS_NAME)),
        selfvos_version=document.get("selfvos_version", "unknown"),
        training_data=_training_section(training),
        recipe=training.get("recipe") or "The training recipe was not recorded with this checkpoint.",
        config_yaml=yaml.safe_dump(config, sort_keys=False),
        evaluation=_evaluation_section(results),
        limitations="\n".join(f"- {item}" for item in limitations + _GENERAL_LIMITATIONS),
        citations="\n\n".join(f"```bibtex\n{BIBTEX[key]}\n```" for key in paper_keys),
    )
    return str(card)


_GENERAL_LIMITATIONS = [
    "Evaluated only where the Evaluation section reports numbers; accuracy elsewhere is unknown.",
    "Video object segmentation models degrade under heavy occlusion, fast motion, small objects and domain shift.",
]


def _read_training(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SelfvosInputError(path, f"not a readable training JSON ({err})") from None
    if not isinstance(data, dict):
        raise SelfvosInputError(path, "expected a JSON object")
    return data


def _training_section(training: Dict[str, Any]) -> str:
    if not training:
        return "Not recorded with this checkpoint (no `training.json` was saved next to the weights)."
    lines = []
    datasets = training.get("datasets")
    if datasets:
        names = datasets if isinstance(datasets, list) else [datasets]
        lines.append("Datasets: " + ", ".join(f"`{name}`" for name in names))
    lines += [f"- {key}: {value}" for key, value in training.items() if key not in ("datasets", "recipe")]
    return "\n".join(lines)


def _evaluation_section(results: List[BenchmarkResult]) -> str:
    if not results:
        return ("Not measured: no benchmark results were supplied when this card was written, "
                "so no accuracy is claimed.")
    rows = ["| task | dataset | split | metric | value |", "|---|---|---|---|---|"]
    for r in results:
        rows += [f"| {r.task} | {r.dataset} | {r.split or '-'} | {name} | {value:g} |" for name, value in r.metrics.items()]
    commands = [f"- `{r.command}`" for r in results if r.command]
    if commands:
        rows += ["", "Measured with:", *commands]
    return "\n".join(rows)


def _class_path(architecture: str) -> str:
    from selfvos.hub.mixin import architectures

    cls = architectures().get(architecture)
    return f"{cls.__module__}.{cls.__qualname__}" if cls is not None else "selfvos (architecture not registered)"


def _format_count(count: int) -> str:
    if count < 1_000_000:
        return f"{count:,} values (parameters and buffers, tied tensors once)"
    return f"{count / 1e6:.2f} M ({count:,} values: parameters and buffers, tied tensors once)"
