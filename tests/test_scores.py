"""Normalized scores under the paper and dataset references."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import write_tiny_dataset
from lqv_d4rl.dataset import load_dataset
from lqv_d4rl.errors import DatasetNotFoundError, UnknownTaskError
from lqv_d4rl.scores import PAPER_REFERENCES, get_normalized_score, reference_range
from lqv_d4rl.tasks import LEVELS, TASKS

PAPER_TABLES = Path("/work/shared/reference/paper_tables.json")


@pytest.mark.parametrize("task, raw, normalized", [
    ("walker_walk", 459, 0.77), ("hopper_hop", 105, 1.24), ("car_racing", 418, 0.94),
    ("cheetah_run", 254, 0.63), ("humanoid_walk", 6, 0.01),
])
def test_paper_reference_reproduces_the_papers_normalized_scores(task, raw, normalized):
    assert get_normalized_score(task, raw) == pytest.approx(normalized, abs=0.005)


@pytest.mark.skipif(not PAPER_TABLES.is_file(), reason="the paper tables are not on this machine")
def test_paper_references_are_the_min_and_max_of_table_3():
    stats = json.loads(PAPER_TABLES.read_text())["dataset_stats"]
    for task in TASKS:
        low = min(stats[task][level]["min"] for level in LEVELS)
        high = max(stats[task][level]["max"] for level in LEVELS)
        assert PAPER_REFERENCES[task] == (low, high)


def test_arrays_give_arrays_and_scalars_give_floats():
    scores = get_normalized_score("walker_walk", [5.0, 598.0, 301.5])
    assert isinstance(scores, np.ndarray) and scores.tolist() == pytest.approx([0.0, 1.0, 0.5])
    assert isinstance(get_normalized_score("walker_walk", np.float32(5.0)), float)


def test_bad_task_or_reference_is_a_clear_error():
    with pytest.raises(UnknownTaskError, match="walker_walk"):
        get_normalized_score("walker_run", 1.0)
    with pytest.raises(ValueError, match="reference must be one of"):
        get_normalized_score("walker_walk", 1.0, reference="expert")


def _write_levels(root, task="hopper_hop"):
    for offset, level in enumerate(LEVELS):
        write_tiny_dataset(root / f"{task}-{level}", task=task, level=level, num_policies=1,
                           seed=10 * offset)


def test_dataset_reference_uses_min_and_max_return_of_the_given_datasets(tmp_path):
    _write_levels(tmp_path)
    datasets = [load_dataset(f"hopper_hop-{level}", root=tmp_path, lazy=True) for level in LEVELS]
    returns = np.concatenate([d.returns for d in datasets])
    low, high = returns.min(), returns.max()
    assert reference_range("hopper_hop", "dataset", datasets) == (low, high)
    scores = get_normalized_score("hopper_hop", [low, high], "dataset", datasets)
    assert scores.tolist() == [0.0, 1.0]
    one = datasets[0]
    assert reference_range("hopper_hop", "dataset", one) == (one.returns.min(), one.returns.max())
    with pytest.raises(ValueError, match="cannot be the reference of"):
        get_normalized_score("walker_walk", 1.0, "dataset", one)


def test_dataset_reference_loads_the_three_levels_from_root(tmp_path):
    _write_levels(tmp_path)
    combined = load_dataset([f"hopper_hop-{level}" for level in LEVELS], root=tmp_path, lazy=True)
    expected = (combined.returns.min(), combined.returns.max())
    assert reference_range("hopper_hop", "dataset", root=tmp_path) == expected
    mid = sum(expected) / 2
    assert get_normalized_score("hopper_hop", mid, "dataset", root=tmp_path) == pytest.approx(0.5)
    with pytest.raises(DatasetNotFoundError, match="lqv-d4rl generate walker_walk --preset smoke --levels random"):
        get_normalized_score("walker_walk", 1.0, "dataset", root=tmp_path)
