"""Model cards: model-index filled only from a benchmark JSON, 'not measured' otherwise, citations, errors."""
from __future__ import annotations

import json

import pytest
import yaml
from huggingface_hub import ModelCard

from selfvos.errors import SelfvosInputError
from selfvos.hub import load_benchmarks, render_model_card
from selfvos.hub.papers import BIBTEX, describe
from selfvos.hub.record import weights_sha256

BENCHMARK = {
    "task": "zero-shot-vos",
    "dataset": "DAVIS-2016",
    "split": "val",
    "metrics": {"J&F": 41.25, "J": 43.5, "F": 39},
    "command": "python benchmarks/davis16.py --split val",
}


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_card_with_benchmark_has_model_index_and_table(tmp_path, checkpoint):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({**BENCHMARK, "weights_sha256": weights_sha256(checkpoint)}))  # measured on these
    card = render_model_card(checkpoint, "org/tiny-net", bench)
    meta = front_matter(card)
    assert meta["library_name"] == "selfvos" and meta["license"] == "apache-2.0"
    (index,) = meta["model-index"]
    assert index["name"] == "tiny-net"
    (result,) = index["results"]
    assert result["task"]["type"] == "zero-shot-vos"
    assert result["dataset"] == {"name": "DAVIS-2016", "type": "DAVIS-2016", "split": "val"}
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"J&F": 41.25, "J": 43.5, "F": 39.0}
    assert "| zero-shot-vos | DAVIS-2016 | val | J&F | 41.25 |" in card
    assert "`python benchmarks/davis16.py --split val`" in card
    assert "Not measured" not in card
    assert "@inproceedings{perazzi2016davis" in card  # DAVIS results cite the benchmark
    parsed = ModelCard(card)  # huggingface_hub reads its own metadata back
    assert parsed.data.eval_results[0].metric_value == 41.25


def test_card_without_benchmark_says_not_measured(checkpoint):
    card = render_model_card(checkpoint, "org/tiny-net")
    assert "model-index" not in front_matter(card)
    assert "Not measured: no benchmark results were supplied" in card
    assert "41.25" not in card
    assert 'selfvos.from_pretrained("org/tiny-net")' in card
    assert "`test-tiny-segmenter`" in card
    assert "Not recorded with this checkpoint" in card
    assert BIBTEX["mug"] in card  # MuG is always cited
    assert "kernel_size: 3" in card and "note: unit test" in card  # the full config
    assert "869 values" in card  # 3 convs + BN + head, tied aux head stored once


def test_training_json_fills_the_training_section(checkpoint):
    (checkpoint / "training.json").write_text(json.dumps(
        {"datasets": ["davis2016-train-240p"], "recipe": "recipes/configs/mug_r18.yaml", "steps": 2000}))
    card = render_model_card(checkpoint, "org/tiny-net")
    assert "Datasets: `davis2016-train-240p`" in card
    assert "recipes/configs/mug_r18.yaml" in card and "- steps: 2000" in card


def test_benchmark_list_and_results_wrapper(tmp_path):
    second = {**BENCHMARK, "task": "one-shot-vos", "metrics": {"J&F": 55.0}}
    for payload in ([BENCHMARK, second], {"results": [BENCHMARK, second]}):
        path = tmp_path / "b.json"
        path.write_text(json.dumps(payload))
        results = load_benchmarks(path)
        assert [r.task for r in results] == ["zero-shot-vos", "one-shot-vos"]
        assert results[0].metrics["F"] == 39.0 and isinstance(results[0].metrics["F"], float)


@pytest.mark.parametrize(
    "payload, problem",
    [
        ({"dataset": "DAVIS-2016", "metrics": {"J": 1.0}}, "result 0: needs a non-empty string 'task'"),
        ({"task": "zvos", "dataset": "DAVIS-2016", "metrics": {}}, "result 0: needs a non-empty 'metrics' object"),
        ({"task": "zvos", "dataset": "D", "metrics": {"J": "high"}}, "result 0: metric 'J' = 'high' is not a finite"),
        ({"task": "zvos", "dataset": "D", "metrics": {"J": True}}, "metric 'J' = True is not a finite number"),
        ([], "expected a result object"),
    ],
)
def test_malformed_benchmark_json_names_the_file(tmp_path, payload, problem):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(SelfvosInputError) as info:
        load_benchmarks(path)
    assert str(info.value).startswith(f"{path}: ") and problem in str(info.value)


def test_nan_metric_and_broken_json_are_refused(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text('{"task": "zvos", "dataset": "D", "metrics": {"J": NaN}}')
    with pytest.raises(SelfvosInputError, match="is not a finite number"):
        load_benchmarks(path)
    path.write_text("{")
    with pytest.raises(SelfvosInputError, match="not a readable benchmark JSON"):
        load_benchmarks(path)


def test_architecture_families_pick_descriptions_and_papers():
    description, limitations, keys = describe("stm-resnet50")
    assert "STM" in description and keys == ["mug", "stm"] and limitations
    assert describe("cfbi-r18")[2] == ["mug", "cfbi", "feelvos"]
    assert describe("mug-resnet18")[2] == ["mug", "manifold_ranking"]
    assert describe("something-new")[2] == ["mug"]
    assert all(key in BIBTEX for name in ("cosnet", "munet", "masktrack", "lvo") for key in describe(name)[2])


def test_the_card_template_is_package_data_and_equals_the_user_facing_copy():
    from pathlib import Path

    import selfvos
    from selfvos.hub.card import TEMPLATE_PATH

    package = Path(selfvos.__file__).resolve().parent
    assert TEMPLATE_PATH.is_file() and TEMPLATE_PATH.is_relative_to(package)  # found by a non-editable install
    user_copy = Path(__file__).resolve().parents[2] / "hub" / "model_card.md"  # the repository's copy
    assert user_copy.read_bytes() == TEMPLATE_PATH.read_bytes(), "hub/model_card.md and the packaged template differ"
