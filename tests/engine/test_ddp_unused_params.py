"""DDP with a parameter that gets no gradient: ``find_unused_parameters=True`` trains like one process.

Without the flag, DDP's second step fails with "Expected to have finished reduction in the prior iteration".
"""
from __future__ import annotations

import json

import pytest
from tests.engine.ddp_worker import launch_two_processes
from tests.engine.ddp_worker import main as run_worker

from selfvos.engine import TrainConfig, build_accelerator


def test_find_unused_parameters_reaches_the_ddp_wrapper(tmp_path):
    acc = build_accelerator(TrainConfig(output_dir=str(tmp_path), find_unused_parameters=True, static_graph=True))
    assert acc.ddp_handler.find_unused_parameters and acc.ddp_handler.static_graph


def test_two_processes_with_an_unused_parameter_equal_one_process(tmp_path):
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    ddp_out.mkdir()
    done = launch_two_processes(ddp_out, "unused")
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((ddp_out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["num_processes"] for r in ranks] == [2, 2] and "MULTI_CPU" in ranks[0]["distributed_type"]

    run_worker(single_out, 1, unused=True)
    single = json.loads((single_out / "rank0.json").read_text())
    assert len(single["losses"]) == 3
    for r in ranks:
        assert r["step"] == 3 and r["losses"] == pytest.approx(single["losses"], rel=1e-5)
        assert r["logit_scale"] == pytest.approx(single["logit_scale"], rel=1e-5)
        assert r["unused"] == single["unused"] == [0.0] * 8  # never updated: no gradient, no weight decay
