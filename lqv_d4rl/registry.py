"""The 15 LQV-D4RL dataset ids, their recipes, and where datasets live on disk.

A dataset id is ``"<task>-<level>"``, e.g. ``"walker_walk-medrep"``. A dataset lives in the folder
``<root>/<dataset_id>/``, where the root is, in order of precedence: the ``root=`` argument, the
environment variable ``LQV_D4RL_ROOT``, or ``~/.lqv_d4rl``.
"""

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UnknownDatasetError
from .tasks import LEVELS, TASKS

ROOT_ENV_VAR = "LQV_D4RL_ROOT"
DEFAULT_ROOT = "~/.lqv_d4rl"

EPISODES_PER_LEVEL = {"random": 200, "medrep": 400, "medium": 200}
"""Episodes in each level's dataset (the paper's recipe)."""

RETURN_STAT_NAMES = ("mean", "std", "min", "p25", "median", "p75", "max")

# Episodic return statistics of the published datasets, Table 3 of the SeMOPO paper
# (Wan et al., ICML 2024), in the order of RETURN_STAT_NAMES.
_PAPER_RETURN_STATS = {
    "walker_walk": {
        "random": (86.6, 48.1, 5.9, 51.9, 70.8, 128.3, 199.1),
        "medrep": (106.6, 79.7, 5.0, 45.4, 81.3, 148.8, 398.2),
        "medium": (513.1, 54.8, 401.5, 471.4, 516.0, 559.1, 598.0),
    },
    "cheetah_run": {
        "random": (77.6, 57.2, 3.1, 14.5, 71.6, 118.8, 198.2),
        "medrep": (145.4, 113.3, 1.7, 42.9, 125.1, 232.6, 396.5),
        "medium": (350.3, 30.8, 300.5, 322.2, 352.5, 376.0, 403.2),
    },
    "hopper_hop": {
        "random": (2.1, 4.9, 0.0, 0.0, 0.0, 0.1, 19.5),
        "medrep": (4.7, 9.7, 0.0, 0.0, 0.0, 3.7, 39.9),
        "medium": (62.0, 13.9, 40.3, 49.8, 60.8, 74.5, 84.9),
    },
    "humanoid_walk": {
        "random": (1.1, 0.8, 0.0, 0.5, 1.0, 1.5, 5.7),
        "medrep": (95.6, 114.3, 0.0, 1.4, 5.4, 202.8, 359.0),
        "medium": (573.0, 16.8, 526.5, 560.6, 572.9, 584.9, 609.4),
    },
    "car_racing": {
        "random": (10.3, 65.5, -82.0, -43.3, -6.5, 59.8, 149.2),
        "medrep": (76.1, 116.3, -82.0, -27.5, 54.1, 181.5, 297.3),
        "medium": (372.3, 42.7, 302.3, 335.5, 370.3, 408.3, 449.9),
    },
}

DATASET_IDS = tuple(f"{task}-{level}" for task in TASKS for level in LEVELS)
"""The 15 benchmark dataset ids, task by task, levels from worst to best."""

_CUSTOM_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class DatasetRecipe:
    """How one benchmark dataset is made, and the return statistics the paper reports for it."""

    dataset_id: str
    task: str
    level: str
    episodes: int
    """Number of episodes in the dataset."""
    paper_returns: dict
    """Episodic return statistics of the paper's Table 3: mean, std, min, p25, median, p75, max."""


def list_datasets() -> list[str]:
    """Return the 15 benchmark dataset ids."""
    return list(DATASET_IDS)


def looks_like_registry_id(dataset_id: str) -> bool:
    """True when ``dataset_id`` is ``<something>-<something>`` with a known task or a known level.

    Such ids must be registry ids (a typo gets suggestions); other names are custom datasets.
    """
    head, sep, tail = str(dataset_id).rpartition("-")
    return bool(sep) and (head in TASKS or tail in LEVELS)


def parse_dataset_id(dataset_id: str) -> tuple[str, str]:
    """Split a benchmark dataset id into ``(task, level)``.

    Raises :class:`UnknownDatasetError`, with the closest valid ids, when it is not one of the 15.
    """
    if dataset_id not in DATASET_IDS:
        raise UnknownDatasetError(_unknown_id_message(dataset_id))
    task, level = dataset_id.rsplit("-", 1)
    return task, level


def normalized_name(name) -> str:
    """``name`` with the typos of case, spaces and '-' against '_' taken out (for suggestions)."""
    return str(name).strip().lower().replace("-", "_")


def _unknown_id_message(dataset_id) -> str:
    same = [known for known in DATASET_IDS if normalized_name(known) == normalized_name(dataset_id)]
    close = same or difflib.get_close_matches(str(dataset_id), DATASET_IDS, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return (
        f"unknown dataset id {dataset_id!r}.{hint} Dataset ids are '<task>-<level>' with tasks "
        f"{', '.join(TASKS)} and levels {', '.join(LEVELS)} (see `lqv-d4rl list` or lqv_d4rl.list_datasets())."
    )


def check_dataset_id(dataset_id: str) -> str:
    """Return ``dataset_id`` if it is a benchmark id or a valid custom name, else raise.

    Ids that look like benchmark ids (``walker_walk-medrp``) must be one of the 15 and get
    suggestions otherwise; custom ids must be a plain folder name (letters, digits, ``_.+-``).
    """
    if not isinstance(dataset_id, str):
        raise UnknownDatasetError(f"a dataset id must be a string, got {dataset_id!r}")
    if looks_like_registry_id(dataset_id):
        parse_dataset_id(dataset_id)
    elif not _CUSTOM_ID_PATTERN.match(dataset_id) or ".." in dataset_id:
        raise UnknownDatasetError(
            f"invalid dataset id {dataset_id!r}: a custom dataset id must be a plain folder name "
            "made of letters, digits and '_', '.', '+', '-' (no slashes, no '..')."
        )
    return dataset_id


def get_recipe(dataset_id: str) -> DatasetRecipe:
    """Return the :class:`DatasetRecipe` of a benchmark dataset id."""
    task, level = parse_dataset_id(dataset_id)
    stats = dict(zip(RETURN_STAT_NAMES, _PAPER_RETURN_STATS[task][level]))
    return DatasetRecipe(dataset_id, task, level, EPISODES_PER_LEVEL[level], stats)


def dataset_root(root=None) -> Path:
    """The folder that holds datasets: ``root`` if given, else ``$LQV_D4RL_ROOT``, else
    ``~/.lqv_d4rl``."""
    chosen = root if root is not None else (os.environ.get(ROOT_ENV_VAR) or DEFAULT_ROOT)
    return Path(chosen).expanduser()


def dataset_path(dataset_id: str, root=None) -> Path:
    """The folder of dataset ``dataset_id`` under the dataset root (it need not exist)."""
    return dataset_root(root) / check_dataset_id(dataset_id)
