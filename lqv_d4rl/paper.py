"""The SeMOPO paper's tables (Wan et al., ICML 2024), shipped with the package as data.

``lqv_d4rl/data/paper_tables.json`` holds Table 1 (normalized returns), Table 2 (RGB-background
generalization), Table 3 (dataset statistics) and Table 5 (raw returns), as means and standard
deviations over 4 seeds. The normalization references below are derived from it.
"""

import functools
import json
from pathlib import Path

TABLES_FILE = Path(__file__).with_name("data") / "paper_tables.json"


@functools.cache
def paper_tables():
    """The paper's tables as a dict: ``dataset_stats`` (Table 3), ``raw_returns`` (Table 5),
    ``normalized_returns`` (Table 1), ``rgb_background_generalization`` (Table 2), each per task and
    level; method tables list ``[mean, std]`` in the order of their ``methods`` entry."""
    return json.loads(TABLES_FILE.read_text())


def _table3_references():
    stats = paper_tables()["dataset_stats"]
    return {task: (min(level["min"] for level in levels.values()),
                   max(level["max"] for level in levels.values()))
            for task, levels in stats.items()}


PAPER_REFERENCES = _table3_references()
"""(S_min, S_max) per task as the paper defines them: the min and max episodic return over the task's
three datasets (Table 3): walker 5.0/598.0, cheetah 1.7/403.2, hopper 0.0/84.9, humanoid 0.0/609.4,
car_racing -82.0/449.9."""

PAPER_TABLE1_REFERENCES = {
    **PAPER_REFERENCES,
    # Table 1's car_racing scores are Table 5's returns normalized with S_min = 10.3, the MEAN
    # return of the random dataset, not its minimum (-82.0); the DMC tasks follow the definition.
    "car_racing": (paper_tables()["dataset_stats"]["car_racing"]["random"]["mean"],
                   PAPER_REFERENCES["car_racing"][1]),
}
"""The (S_min, S_max) that reproduce the paper's Table 1 from its Table 5 (use it to compare with the
paper's numbers)."""


def paper_score(task, level, method, table="normalized_returns"):
    """``(mean, std)`` of ``method`` on ``task-level`` in one of the paper's method tables
    (``normalized_returns``: Table 1, ``raw_returns``: Table 5), or None if the paper has none."""
    data = paper_tables()[table]
    methods = [_registry_name(name) for name in data["methods"]]
    key = _registry_name(method)
    if key not in methods or task not in data or level not in data[task]:
        return None
    mean, std = data[task][level][methods.index(key)]
    return float(mean), float(std)


def _registry_name(method):
    """The paper's method name as the algorithm registry spells it ("DrQ+BC" -> "drq_bc")."""
    return method.lower().replace("+", "_").replace(" ", "_")
