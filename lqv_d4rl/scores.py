"""Normalized scores: ``(S - S_min) / (S_max - S_min)``.

S_min and S_max are the lowest and highest episodic returns over the three datasets (random,
medrep, medium) of a task. Three references exist: ``"paper"``, the constants of the paper's Table 3;
``"paper_table1"``, the constants the paper's Table 1 was actually computed with (the same, except
car_racing, whose S_min there is the random dataset's mean return 10.3, not its minimum -82.0: use
it to compare with the paper's numbers); and ``"dataset"``, computed from the datasets you have.
"""

import numpy as np

from .errors import UnknownTaskError
from .paper import PAPER_REFERENCES, PAPER_TABLE1_REFERENCES
from .tasks import LEVELS, get_task

REFERENCES = ("paper", "paper_table1", "dataset")


def get_normalized_score(task: str, returns, reference: str = "paper", dataset=None, *,
                         root=None):
    """Normalize raw episodic ``returns`` of ``task``; a float for a scalar, an array otherwise.

    ``reference="paper"`` uses :data:`PAPER_REFERENCES` (Table 3), ``"paper_table1"``
    :data:`PAPER_TABLE1_REFERENCES` (what Table 1 used). ``reference="dataset"`` uses the min and
    max episodic return of ``dataset`` (a Dataset or a list of them); without ``dataset`` the
    task's three levels are read from the dataset root ``root`` (only their episode tables).
    """
    low, high = reference_range(task, reference, dataset, root=root)
    scores = (np.asarray(returns, dtype=np.float64) - low) / (high - low)
    return float(scores) if scores.ndim == 0 else scores


def reference_range(task: str, reference: str = "paper", dataset=None, *,
                    root=None) -> tuple[float, float]:
    """The ``(S_min, S_max)`` that :func:`get_normalized_score` normalizes with."""
    if reference in ("paper", "paper_table1"):
        table = PAPER_REFERENCES if reference == "paper" else PAPER_TABLE1_REFERENCES
        if task not in table:
            raise UnknownTaskError(
                f"no paper reference for task {task!r}; the tasks with one are {', '.join(table)}"
            )
        return table[task]
    if reference != "dataset":
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    returns = _reference_returns(task, dataset, root)
    if returns.size == 0:
        raise ValueError(f"the reference datasets of {task!r} hold no episodes")
    low, high = float(returns.min()), float(returns.max())
    if high <= low:
        raise ValueError(
            f"every episode of the reference datasets of {task!r} has return {low}; a normalized "
            "score needs episodes with different returns"
        )
    return low, high


def _reference_returns(task: str, dataset, root) -> np.ndarray:
    if dataset is None:
        from .dataset import load_dataset

        get_task(task)  # an unknown task fails here, not as three missing datasets
        # lazy: only the episode tables are read, the images stay on disk
        dataset = load_dataset([f"{task}-{level}" for level in LEVELS], root=root, lazy=True)
    datasets = dataset if isinstance(dataset, (list, tuple)) else [dataset]
    for item in datasets:
        if item.task != task:  # a multi-task combination would mix in other tasks' returns
            raise ValueError(f"a dataset of task {item.task!r} cannot be the reference of {task!r}")
    return np.concatenate([np.asarray(item.returns, dtype=np.float64) for item in datasets])
