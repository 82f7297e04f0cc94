"""How deployed files are run and timed: session options chosen per batch size, plain interleaved timing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from distill.errors import UsageError
from distill.export import OnnxClassifier, export_onnx
from distill.runtime import (BestOf, SessionOptions, empty_graph_round, interleaved, onnx_round, open_session,
                             session_choices, thread_choices, torch_round)

pytest.importorskip("onnxruntime")


def test_session_options_are_plain_values_and_bad_ones_are_one_line():
    options = SessionOptions(2, "extended")
    assert SessionOptions.from_dict(options.as_dict()) == options
    for bad in ({"intra_op_threads": 0}, {"intra_op_threads": 1, "optimization": "max"}, {"threads": 1}):
        with pytest.raises(UsageError):
            SessionOptions.from_dict(bad)


def test_each_round_counts_the_fastest_way_and_the_most_frequent_winner_is_the_one_to_deploy():
    slow, fast = (lambda n: 2e-3), (lambda n: 1e-3)
    best = BestOf({"slow": slow, "fast": fast})
    assert interleaved({"a": best}, calls=5, repeats=3) == {"a": 1e-3} and best.winner == "fast"
    assert dict(best.wins) == {"fast": 3}  # warm-up calls are not rounds
    assert {o.intra_op_threads for o in session_choices()} == set(thread_choices())


def test_a_file_runs_with_the_options_it_was_timed_with(tmp_path):
    network = nn.Sequential(nn.Flatten(), nn.Linear(12, 5)).eval()
    path = export_onnx(network, (3, 4), tmp_path / "m.onnx")
    options = session_choices()[-1]
    classifier = OnnxClassifier(path, sessions={"latency": options, "throughput": SessionOptions(1, "extended")})
    inputs = torch.randn(7, 3, 4)
    with torch.no_grad():
        assert torch.allclose(classifier(inputs), network(inputs), atol=1e-5)  # batch 7: the throughput session
        assert torch.allclose(classifier(inputs[:1]), network(inputs[:1]), atol=1e-5)
    assert classifier.options == {"latency": options, "throughput": SessionOptions(1, "extended")}


def test_interleaved_rounds_time_every_call_and_the_empty_graph_is_the_floor(tmp_path):
    network = nn.Sequential(nn.Flatten(), nn.Linear(12, 512), nn.ReLU(), nn.Linear(512, 5)).eval()
    path = export_onnx(network, (3, 4), tmp_path / "m.onnx")
    calls = []
    session = open_session(path, SessionOptions(1))
    rounds = {"file": onnx_round(session, np.zeros((1, 3, 4), np.float32)),
              "torch": torch_round(network, torch.zeros(1, 3, 4), threads=1),
              "empty": empty_graph_round((3, 4)),
              "counted": lambda n: calls.append(n) or 1e-3}
    medians = interleaved(rounds, calls=20, repeats=3)
    assert set(medians) == set(rounds) and calls == [3, 20, 20, 20]  # a warm-up, then one per round
    assert 0 < medians["empty"] < medians["file"] and medians["counted"] == 1e-3
    assert torch.get_num_threads() >= 1  # restored after the PyTorch rounds
