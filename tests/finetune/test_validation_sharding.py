"""Validation under N processes: each held-out video is scored by exactly one process, the gathered scores
equal one process's, and only the main process logs and writes ``best/``."""
from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient
from tests.finetune.validation_worker import launch

from selfvos.engine.distributed import gather_in_order, shard_range


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_the_split_covers_each_video_once_in_order(world):
    for n in range(11):
        ranges = [shard_range(n, rank, world) for rank in range(world)]
        assert [i for r in ranges for i in r] == list(range(n))
        assert max(map(len, ranges)) - min(map(len, ranges)) <= 1
        assert [len(r) for r in ranges] == sorted((len(r) for r in ranges), reverse=True)  # larger blocks first
    with pytest.raises(ValueError):
        shard_range(3, world, world)


def test_one_process_gathers_in_index_order_and_raises_its_error():
    assert gather_in_order([(2, "c"), (0, "a"), (1, "b")], None, None) == [(0, "a"), (1, "b"), (2, "c")]
    with pytest.raises(KeyError, match="boom"):
        gather_in_order([(0, "a")], KeyError("boom"), None)


def test_two_processes_score_their_share_and_agree_with_one_process(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    done = launch(out)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["num_processes"] for r in ranks] == [2, 2]
    held = ranks[0]["held"]
    assert len(held) == 3

    # each evaluation (steps 1 and 2) splits the videos: 2 on process 0, 1 on process 1, none twice
    assert ranks[0]["scored"] == held[:2] * 2 and ranks[1]["scored"] == held[2:] * 2
    steps = [[step for step, _ in r["evaluations"]] for r in ranks]
    assert steps[0] == steps[1] and steps[0][:2] == [1, 2]
    assert ranks[0]["evaluations"] == ranks[1]["evaluations"]  # every process has the same J&F

    # the gathered score of the best weights equals the score one process computes alone, exactly
    assert ranks[0]["best_sharded"] == ranks[1]["best_sharded"] == ranks[0]["best_alone"]
    best = json.loads((out / "best" / "best.json").read_text())
    assert best["value"] == ranks[0]["best_sharded"]["J&F"]
    assert best["metrics"] == dict(ranks[0]["evaluations"])[best["step"]]

    # only the main process saves the best model and logs
    assert ranks[0]["saves"] >= 1 and ranks[1]["saves"] == 0
    assert set(ranks[0]["tracker"]) == {True} and set(ranks[1]["tracker"]) == {False}
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("selfvos").experiment_id])
    assert len(runs) == 1
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "val/J_F")] == [1, 2]
