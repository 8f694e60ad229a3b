"""Model cards: ``selfvos/hub/templates/model_card.md`` filled from a checkpoint and (optionally) a benchmark JSON.

The benchmark JSON is one result or a list of them (or ``{"results": [...]}``)::

    {"task": "zero-shot-vos", "dataset": "DAVIS-2016", "split": "val",
     "metrics": {"J&F": 61.2, "J": 62.0, "F": 60.4}, "command": "python benchmarks/davis16.py ...",
     "weights_sha256": "<SHA-256 of the model.safetensors the numbers were measured on>"}

or a table of named rows, ``{"rows": {name: row}}`` or ``{"results": {name: row}}``, as
``benchmarks/heads_davis16.py`` accumulates them: a row may give its metrics as top-level ``"J&F"``, ``"J"``,
``"F"`` and takes ``task`` / ``dataset`` / ``split`` / ``command`` from the top level of the file when it has
none of its own.

Results are bound to weights: only the results whose ``weights_sha256`` equals the checkpoint's
(:func:`selfvos.hub.record.weights_sha256`) reach the card; a file with no such result, or with a result that
records no fingerprint, is refused (:func:`results_for_weights`). Their numbers become the card's
``model-index`` and an Evaluation table. Without a benchmark JSON the card says "not measured" and carries no
``model-index``: numbers are never invented. The ``training.json`` written with every export
(:func:`selfvos.hub.record.write_training_record`) fills the training and recipe sections; the card warns
when that record describes other weights than the checkpoint's.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import yaml

from selfvos.errors import SelfvosInputError
from selfvos.hub.files import CONFIG_NAME, read_config
from selfvos.hub.papers import BIBTEX, describe
from selfvos.hub.record import HASH_KEY, SCRATCH, TRAINING_NAME, read_training_record, short_hash, weights_sha256
from selfvos.hub.weights import WEIGHTS_NAME

# Package data, so an installed (non-editable) selfvos finds it; ``hub/model_card.md`` is the same file
# kept next to the publishing docs (tests/hub/test_hub_card.py checks that the two agree).
TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "model_card.md"
LICENSE = "apache-2.0"
ROW_METRICS = ("J&F", "J", "F")  # the metrics a benchmark row gives at its top level
SHARED_FIELDS = ("task", "dataset", "split", "command")  # a row takes these from the file when it has none
_BASE_FIELDS = ("task", "dataset", "metrics", "split", "command", HASH_KEY)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class BenchmarkResult:
    """One measured result: ``metrics`` maps a metric name (``"J&F"``) to its value; ``weights_sha256`` is the
    fingerprint of the weights it was measured on (``None`` when the benchmark did not record it)."""

    task: str
    dataset: str
    metrics: Dict[str, float]
    split: Optional[str] = None
    command: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    weights_sha256: Optional[str] = None


def load_benchmarks(path: Optional[Union[str, Path]]) -> List[BenchmarkResult]:
    """Parse a benchmark JSON (``None`` -> no results); malformed content names the file and the entry."""
    if path is None:
        return []
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SelfvosInputError(path, f"not a readable benchmark JSON ({err})") from None
    return [_parse_result(path, where, entry) for where, entry in _entries(path, data)]


def _entries(path: Path, data: Any) -> List[Tuple[str, Any]]:
    """(where, entry) pairs of a benchmark JSON: a result, a list, ``{"results": [...]}`` or a table of rows."""
    table = data.get("rows", data.get("results")) if isinstance(data, dict) else None
    if isinstance(table, dict):
        if not table:
            raise SelfvosInputError(path, "the table of results is empty")
        shared = {key: data[key] for key in SHARED_FIELDS if key in data}
        return [(f"row {name!r}", {**shared, **row} if isinstance(row, dict) else row) for name, row in table.items()]
    entries = data.get("results", data) if isinstance(data, dict) else data
    entries = [entries] if isinstance(entries, dict) else entries
    if not isinstance(entries, list) or not entries:
        raise SelfvosInputError(path, "expected a result object, a list of them, {'results': [...]} or "
                                      "{'rows': {name: result}}")
    return [(f"result {i}", entry) for i, entry in enumerate(entries)]


def _parse_result(path: Path, where: str, entry: Any) -> BenchmarkResult:
    if not isinstance(entry, dict):
        raise SelfvosInputError(path, f"{where}: expected an object, got {type(entry).__name__}")
    for key in ("task", "dataset"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            hint = " (in the row, or at the top level of the file for every row)" if where.startswith("row ") else ""
            raise SelfvosInputError(path, f"{where}: needs a non-empty string {key!r}{hint}")
    metrics = entry.get("metrics", {k: entry[k] for k in ROW_METRICS if k in entry})
    if not isinstance(metrics, dict) or not metrics:
        raise SelfvosInputError(path, f"{where}: needs a non-empty 'metrics' object")
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SelfvosInputError(path, f"{where}: metric {name!r} = {value!r} is not a finite number")
    digest = entry.get(HASH_KEY)
    if digest is not None and not (isinstance(digest, str) and _SHA256.match(digest)):
        raise SelfvosInputError(path, f"{where}: {HASH_KEY} = {digest!r} is not a SHA-256 (64 lowercase hex digits)")
    skip = _BASE_FIELDS + (ROW_METRICS if "metrics" not in entry else ())
    extra = {k: v for k, v in entry.items() if k not in skip}
    return BenchmarkResult(entry["task"], entry["dataset"], {k: float(v) for k, v in metrics.items()},
                           entry.get("split"), entry.get("command"), extra, digest)


def results_for_weights(path: Union[str, Path], results: List[BenchmarkResult], digest: str) -> List[BenchmarkResult]:
    """The results of benchmark file ``path`` measured on the weights with fingerprint ``digest``.

    Refuses (naming ``path``) a file with a result that records no ``weights_sha256``, and a file none of
    whose results was measured on these weights: a card never shows numbers its weights did not earn.
    """
    unbound = sum(1 for r in results if r.weights_sha256 is None)
    if unbound:
        raise SelfvosInputError(path, f"{unbound} of {len(results)} results record no {HASH_KEY}: measured on weights "
                                      f"unknown, and the checkpoint's weights are {short_hash(digest)}; rerun the "
                                      "benchmark on this checkpoint (it records the weights it measured)")
    matching = [r for r in results if r.weights_sha256 == digest]
    if not matching:
        measured = ", ".join(dict.fromkeys(short_hash(r.weights_sha256) for r in results))
        raise SelfvosInputError(path, f"the results were measured on weights {measured}, but the checkpoint's weights "
                                      f"are {short_hash(digest)}; refusing to put numbers these weights did not earn "
                                      "on its card (rerun the benchmark on this checkpoint)")
    return matching


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
    *,
    weights_digest: Optional[str] = None,
) -> str:
    """The README.md text (YAML metadata + markdown) for the checkpoint in ``checkpoint_dir``.

    Only the results of ``benchmark_json`` measured on this checkpoint's weights are shown (see
    :func:`results_for_weights`); ``weights_digest`` is their fingerprint when the caller already computed it.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    checkpoint_dir = Path(checkpoint_dir)
    architecture, config, document = read_config(checkpoint_dir / CONFIG_NAME)
    digest = weights_digest or weights_sha256(checkpoint_dir)
    results = load_benchmarks(benchmark_json)
    if results:
        results = results_for_weights(benchmark_json, results, digest)
    training = read_training_record(checkpoint_dir / TRAINING_NAME)
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
        training_data=_training_section(training, digest),
        recipe=_recipe_section(training),
        config_yaml=yaml.safe_dump(config, sort_keys=False),
        evaluation=_evaluation_section(results, digest),
        limitations="\n".join(f"- {item}" for item in limitations + _GENERAL_LIMITATIONS),
        citations="\n\n".join(f"```bibtex\n{BIBTEX[key]}\n```" for key in paper_keys),
    )
    return str(card)


_GENERAL_LIMITATIONS = [
    "Evaluated only where the Evaluation section reports numbers; accuracy elsewhere is unknown.",
    "Video object segmentation models degrade under heavy occlusion, fast motion, small objects and domain shift.",
]
# keys of training.json that the training and recipe sections render themselves (the rest become a list)
_TRAINING_SHOWN = ("data", "datasets", "recipe", "config", "step", "steps", "init", "init_sha256", HASH_KEY,
                   "selfvos_version", "date")


def _training_section(training: Dict[str, Any], digest: str) -> str:
    """Markdown for "Training data": data sources, steps, init, provenance, and a warning when ``training.json``
    was recorded for other weights than the checkpoint's (fingerprint ``digest``)."""
    if not training:
        return "Not recorded with this checkpoint (no `training.json` was saved next to the weights)."
    lines = _record_warning(training, digest)
    data = training.get("data", training.get("datasets"))
    if data:
        lines.append("Datasets: " + ", ".join(f"`{name}`" for name in (data if isinstance(data, list) else [data])))
    steps = training.get("step", training.get("steps"))
    if steps is not None:
        lines.append(f"- steps: {steps}")
    if "init" in training:
        lines.append(f"- initialised from: {_init_text(training)}")
    if training.get("selfvos_version") or training.get("date"):
        lines.append(f"- recorded by selfvos {training.get('selfvos_version', '?')} on {training.get('date', '?')}")
    lines += [f"- {key}: {_value_text(value)}" for key, value in training.items() if key not in _TRAINING_SHOWN]
    return "\n".join(lines)


def _record_warning(training: Dict[str, Any], digest: str) -> List[str]:
    """A warning paragraph when ``training.json``'s weights fingerprint is absent or differs from ``digest``."""
    recorded = training.get(HASH_KEY)
    if recorded is None:
        return ["> **Note:** `training.json` records no weights fingerprint, so it cannot be checked against "
                "these weights.", ""]
    if recorded != digest:
        return [f"> **Warning:** `training.json` was recorded for weights {short_hash(str(recorded))}, but "
                f"`model.safetensors` is {short_hash(digest)}: these are not the weights the record describes "
                "(changed or replaced after it was written), so what follows may not apply to them.", ""]
    return []


def _init_text(training: Dict[str, Any]) -> str:
    init = training.get("init")
    if not init or init == SCRATCH:
        return "random initialisation (scratch)"
    digest = training.get("init_sha256")
    return f"`{init}`" + (f" (weights {short_hash(digest)})" if digest else "")


def _value_text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


def _recipe_section(training: Dict[str, Any]) -> str:
    """Markdown for "Recipe and configuration": the recipe name and, when recorded, the full run config."""
    recipe = training.get("recipe")
    if not recipe:
        return "The training recipe was not recorded with this checkpoint."
    lines = [f"Trained with `{recipe}`."]
    if isinstance(training.get("config"), dict):
        lines += ["", "<details>", "<summary>Full training run configuration (<code>training.json</code> &rarr; "
                  "<code>config</code>)</summary>", "", "```yaml",
                  yaml.safe_dump(training["config"], sort_keys=False).rstrip(), "```", "", "</details>"]
    return "\n".join(lines)


def _evaluation_section(results: List[BenchmarkResult], digest: str) -> str:
    if not results:
        return ("Not measured: no benchmark results were supplied when this card was written, "
                "so no accuracy is claimed.")
    rows = [f"Measured on exactly these weights (`model.safetensors` SHA-256 `{digest}`).", "",
            "| task | dataset | split | metric | value |", "|---|---|---|---|---|"]
    for r in results:
        rows += [f"| {r.task} | {r.dataset} | {r.split or '-'} | {name} | {value:g} |" for name, value in r.metrics.items()]
    commands = [f"- `{command}`" for command in dict.fromkeys(r.command for r in results if r.command)]
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
