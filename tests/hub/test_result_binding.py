"""Benchmark results are bound to the weights they were measured on: a model card shows only the results whose
``weights_sha256`` equals the pushed weights', and ``selfvos push`` refuses a file with none or with unbound rows."""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from selfvos.cli import main
from selfvos.errors import SelfvosInputError
from selfvos.eval.runner import row_weights
from selfvos.hub import publish
from selfvos.hub.card import load_benchmarks, render_model_card, results_for_weights
from selfvos.hub.record import weights_sha256

REPO = Path(__file__).resolve().parents[2]
OTHER = "0123456789ab" + "c" * 52  # the fingerprint of some other weights


def result(digest, jf=41.25, task="zero-shot-vos"):
    row = {"task": task, "dataset": "DAVIS-2016", "split": "val", "metrics": {"J&F": jf, "J": 43.5, "F": 39.0},
           "command": "python benchmarks/davis16.py"}
    return row if digest is None else {**row, "weights_sha256": digest}


def write(path: Path, payload) -> Path:
    path.write_text(json.dumps(payload))
    return path


def benchmark_script(name: str):
    """A module of ``benchmarks/<name>.py`` (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_index_values(card: str) -> dict:
    (index,) = yaml.safe_load(card.split("---\n")[1])["model-index"]
    return {(r["task"]["type"], m["type"]): m["value"] for r in index["results"] for m in r["metrics"]}


def test_the_fingerprint_is_the_sha256_of_the_weights_file(checkpoint):
    expected = hashlib.sha256((checkpoint / "model.safetensors").read_bytes()).hexdigest()
    assert weights_sha256(checkpoint) == expected == weights_sha256(checkpoint / "model.safetensors")
    assert weights_sha256(str(checkpoint)) == expected


def test_the_fingerprint_of_a_folder_without_weights_names_it(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SelfvosInputError, match="not a selfvos checkpoint: no model.safetensors") as info:
        weights_sha256(tmp_path / "empty")
    assert info.value.path == str(tmp_path / "empty")


def test_card_shows_only_the_results_measured_on_these_weights(tmp_path, checkpoint):
    digest = weights_sha256(checkpoint)
    bench = write(tmp_path / "bench.json", [result(digest, 41.25), result(OTHER, 77.5, task="one-shot-vos")])
    card = render_model_card(checkpoint, "org/tiny", bench)
    assert model_index_values(card) == {("zero-shot-vos", "J&F"): 41.25, ("zero-shot-vos", "J"): 43.5,
                                        ("zero-shot-vos", "F"): 39.0}
    assert "| zero-shot-vos | DAVIS-2016 | val | J&F | 41.25 |" in card
    assert "77.5" not in card and "one-shot-vos" not in card
    assert f"SHA-256 `{digest}`" in card


def test_results_for_other_weights_are_refused(tmp_path, checkpoint):
    digest = weights_sha256(checkpoint)
    bench = write(tmp_path / "bench.json", [result(OTHER), result("f" * 64)])
    with pytest.raises(SelfvosInputError) as info:
        render_model_card(checkpoint, "org/tiny", bench)
    message = str(info.value)
    assert message.startswith(f"{bench}: the results were measured on weights 0123456789ab, ffffffffffff, ")
    assert f"but the checkpoint's weights are {digest[:12]}" in message


@pytest.mark.parametrize("bound", [False, True])
def test_results_without_a_fingerprint_are_refused(tmp_path, checkpoint, bound):
    digest = weights_sha256(checkpoint)
    rows = [result(None)] + ([result(digest)] if bound else [])  # one unbound row spoils even a bound one
    bench = write(tmp_path / "bench.json", rows)
    with pytest.raises(SelfvosInputError) as info:
        render_model_card(checkpoint, "org/tiny", bench)
    assert str(info.value).startswith(f"{bench}: 1 of {len(rows)} results record no weights_sha256: measured on "
                                      f"weights unknown, and the checkpoint's weights are {digest[:12]}")


def test_a_malformed_fingerprint_names_the_result(tmp_path):
    bench = write(tmp_path / "bench.json", [result("abc123")])
    with pytest.raises(SelfvosInputError, match=r"result 0: weights_sha256 = 'abc123' is not a SHA-256"):
        load_benchmarks(bench)


def test_a_table_row_without_a_task_says_where_to_give_it(tmp_path):
    row = {"dataset": "DAVIS-2016", "J&F": 1.0, "weights_sha256": OTHER}
    bench = write(tmp_path / "rows.json", {"rows": {"stm": row}})
    with pytest.raises(SelfvosInputError) as info:
        load_benchmarks(bench)
    assert str(info.value) == (f"{bench}: row 'stm': needs a non-empty string 'task' (in the row, or at the top "
                               "level of the file for every row)")


def test_push_refuses_numbers_of_other_weights_and_writes_nothing(tmp_path, checkpoint, monkeypatch, capsys):
    uploads = []
    monkeypatch.setattr(publish, "upload_folder", lambda *args, **kwargs: uploads.append(args) or "url")
    bench = write(tmp_path / "bench.json", {"results": [result(OTHER)]})
    out = tmp_path / "upload"
    argv = ["push", "--checkpoint", str(checkpoint), "--repo-id", "org/tiny", "--benchmark-json", str(bench)]
    assert main([*argv, "--dry-run", str(out)]) == 2
    assert main(argv) == 2
    err = capsys.readouterr().err
    refusal = f"error: {bench}: the results were measured on weights 0123456789ab"
    assert err.startswith("selfvos") and err.count(refusal) == 2  # dry run and upload alike
    assert "Traceback" not in err and not out.exists() and uploads == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("upload")]  # no staging folder left


def test_push_with_bound_results_uploads_the_weights_that_earned_them(tmp_path, checkpoint):
    bench = write(tmp_path / "bench.json", [result(weights_sha256(checkpoint), 12.5)])
    out = tmp_path / "upload"
    publish.push_checkpoint(checkpoint, "org/tiny", benchmark_json=bench, dry_run_dir=out)
    assert weights_sha256(out) == weights_sha256(checkpoint)
    assert model_index_values((out / "README.md").read_text())[("zero-shot-vos", "J&F")] == 12.5


def test_weights_changed_while_the_upload_is_built_are_refused(tmp_path, checkpoint, monkeypatch):
    bench = write(tmp_path / "bench.json", [result(weights_sha256(checkpoint))])
    real_copy = publish.shutil.copyfile

    def copy_then_damage(src, dst):
        real_copy(src, dst)
        if Path(dst).name == "model.safetensors":
            with open(dst, "ab") as fh:
                fh.write(b"\0")

    monkeypatch.setattr(publish.shutil, "copyfile", copy_then_damage)
    out = tmp_path / "upload"
    with pytest.raises(SelfvosInputError, match="changed while the upload was prepared"):
        publish.build_upload_folder(checkpoint, out, "org/tiny", bench)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "ckpt"]  # no upload, no staging folder


def test_heads_benchmark_rows_go_only_to_the_card_of_their_weights(tmp_path, hub_classes):
    heads = benchmark_script("heads_davis16")
    mine = hub_classes["trained_segmenter"](seed=1).save_pretrained(tmp_path / "mine")
    other = hub_classes["trained_segmenter"](seed=2).save_pretrained(tmp_path / "other")
    scores = {"J&F": 60.0, "J": 61.0, "F": 59.0, "frames_per_s": 1.5, "per_sequence_JF": {"blackswan": 60.0}}
    record, chosen = {"init": "scratch", "step": 40}, {"step": 20, "value": 55.0}
    rows = {"stm, init scratch": heads.head_row("stm", mine, record, chosen, scores, 320),
            "label propagation": heads.baseline_row(str(other), {**scores, "J&F": 99.0})}
    assert rows["stm, init scratch"]["weights_sha256"] == weights_sha256(mine)
    bench = write(tmp_path / "heads.json", {"rows": rows, "command": "python benchmarks/heads_davis16.py"})
    card = render_model_card(mine, "org/stm", bench)
    assert model_index_values(card) == {("one-shot-vos", "J&F"): 60.0, ("one-shot-vos", "J"): 61.0,
                                        ("one-shot-vos", "F"): 59.0}
    assert "99" not in card.split("## Evaluation")[1].split("## Limitations")[0]
    assert "`python benchmarks/heads_davis16.py`" in card


def test_davis16_card_rows_carry_the_weights_they_were_measured_on(tmp_path, checkpoint):
    davis16 = benchmark_script("davis16")
    digest = weights_sha256(checkpoint)
    scores = {"J&F": 59.26, "J": 62.24, "F": 56.28, "frames_per_s": 2.0, "per_sequence_JF": {}}
    results = {"zero-shot (default, online)": {**scores, **row_weights("zero-shot", digest)},
               "one-shot (model features)": {**scores, "J&F": 70.9, **row_weights("one-shot", digest)},
               "first-frame copy": {**scores, **row_weights("copy", digest)}}
    assert results["first-frame copy"]["weights_sha256"] is None  # a model-free floor has no weights
    card_rows = davis16.card_results(results, "python benchmarks/davis16.py --checkpoint ckpt")
    assert [row["weights_sha256"] for row in card_rows] == [digest, digest]
    card = render_model_card(checkpoint, "org/tiny", write(tmp_path / "card.json", card_rows))
    assert model_index_values(card)[("one-shot-vos", "J&F")] == 70.9


def test_the_real_heads_table_is_read_and_refused_for_other_weights(tmp_path, checkpoint):
    heads = benchmark_script("heads_davis16")
    real = json.loads((REPO / "benchmarks" / "results" / "heads_davis16.json").read_text())
    bench = write(tmp_path / "heads.json", {**heads.MEASURED, **real})  # file-level fields fill rows without them
    results = load_benchmarks(bench)
    assert len(results) == len(real["rows"])
    assert [r.task for r in results] == [row.get("task", "one-shot-vos") for row in real["rows"].values()]
    assert {r.task for r in results} <= {"one-shot-vos", "zero-shot-vos"}
    assert {r.weights_sha256 for r in results} == {row["weights_sha256"] for row in real["rows"].values()}
    assert all(set(r.metrics) == {"J&F", "J", "F"} for r in results)
    with pytest.raises(SelfvosInputError) as info:
        results_for_weights(bench, results, weights_sha256(checkpoint))
    for row in real["rows"].values():
        assert row["weights_sha256"][:12] in str(info.value)


def test_the_same_weights_give_the_same_file_in_every_process(tmp_path):
    """safetensors writes its metadata in hash-map order, which varies between processes; the fingerprint that
    binds results to weights must not."""
    import subprocess
    import sys

    script = ("import sys, torch; from pathlib import Path; from selfvos.hub.weights import save_weights; "
              "torch.manual_seed(0); save_weights(torch.nn.Linear(3, 2), Path(sys.argv[1]))")
    digests = set()
    for i in range(4):
        path = tmp_path / f"{i}.safetensors"
        subprocess.run([sys.executable, "-c", script, str(path)], check=True, cwd=REPO)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
