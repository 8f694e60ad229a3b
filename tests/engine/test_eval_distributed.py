"""The agreement steps of distributed validation, with the collectives replaced by what the other process
would send: a failure anywhere stops every process before any further collective, the main process's
decision on the best is the one every process takes, and gathered results come back in item order."""
from __future__ import annotations

import pytest

from selfvos.engine import EvalCallback, callbacks, distributed
from selfvos.engine.distributed import gather_in_order


class Process:
    """What ``EvalCallback`` and ``gather_in_order`` read from an Accelerator."""

    def __init__(self, rank: int, world: int = 2) -> None:
        self.process_index, self.num_processes, self.is_main_process = rank, world, rank == 0


def no_collective(*args, **kwargs):
    raise AssertionError("no collective may follow a failure")


def test_a_failure_on_another_process_stops_every_process_before_any_other_collective(monkeypatch):
    evaluation = EvalCallback(lambda model: {"score": 1.0}, every=1, metric="score", distributed=True)
    monkeypatch.setattr(callbacks, "broadcast_object_list", no_collective)
    monkeypatch.setattr(callbacks, "gather_object", lambda mine: [mine[0], "ValueError: video 3 is unreadable"])
    with pytest.raises(RuntimeError, match="step 4 failed on process 1: ValueError: video 3 is unreadable"):
        evaluation._agree(Process(0), {"score": 1.0}, None, step=4)
    monkeypatch.setattr(callbacks, "gather_object", lambda mine: [None, mine[0]])
    with pytest.raises(ValueError, match="unreadable"):  # the failing process raises its own error
        evaluation._agree(Process(1), None, ValueError("video 3 is unreadable"), step=4)


def test_every_process_takes_the_main_process_decision(monkeypatch):
    main_says = ({"score": 0.7}, True)

    def from_main(payload):
        payload[0] = main_says

    monkeypatch.setattr(callbacks, "gather_object", lambda mine: [None, None])
    monkeypatch.setattr(callbacks, "broadcast_object_list", from_main)
    other = EvalCallback(lambda model: {"score": 0.0}, every=1, metric="score", distributed=True)
    other.best = (0.9, 2)  # on its own this process would not call 0.7 an improvement
    assert other._agree(Process(1), {"score": 0.7}, None, step=4) == main_says
    main = EvalCallback(lambda model: {"score": 0.0}, every=1, metric="score", distributed=True)
    main.best = (0.5, 2)
    monkeypatch.setattr(callbacks, "broadcast_object_list", lambda payload: None)
    assert main._agree(Process(0), {"score": 0.7}, None, step=4) == main_says


def test_gathered_results_come_back_in_item_order_and_failures_stop_everyone(monkeypatch):
    parts = [(0, [(0, "a"), (1, "b")], None), (1, [(2, "c")], None)]
    monkeypatch.setattr(distributed, "gather_object", lambda mine: parts)
    assert gather_in_order([(0, "a"), (1, "b")], None, Process(0)) == [(0, "a"), (1, "b"), (2, "c")]
    parts[1] = (1, [], "KeyError: 'frame 7'")
    with pytest.raises(RuntimeError, match="process 1 failed: KeyError"):
        gather_in_order([(0, "a"), (1, "b")], None, Process(0))
    parts[1] = (1, [(1, "b")], None)
    with pytest.raises(RuntimeError, match="overlapping"):
        gather_in_order([(0, "a"), (1, "b")], None, Process(0))
