"""Finding a dataset's folder from what a user typed: an id under the dataset root, or a path."""

import json
import os
import shlex
from pathlib import Path

from .errors import DatasetNotFoundError, UnknownDatasetError
from .format import MANIFEST_NAME
from .registry import (
    check_dataset_id, dataset_path, dataset_root, looks_like_registry_id, parse_dataset_id,
)


HUB_RECORD_NAME = ".hub.json"
"""Written next to the manifest by a download: the repository, revision and commit it came from."""


def read_hub_record(folder) -> dict | None:
    """The ``.hub.json`` of a downloaded dataset folder (repo, revision, commit, ...), or None."""
    try:
        return json.loads((Path(folder) / HUB_RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def find_dataset_folder(source, root=None) -> Path:
    """The folder of ``source`` (a dataset id or a folder) on this machine.

    A ``Path`` or a string with a path separator is a folder. A bare name is looked up under the
    dataset root first, then taken as a folder relative to the working directory.
    Raises UnknownDatasetError for a mistyped benchmark id and DatasetNotFoundError, saying how to
    generate or download it, for a dataset that is not on disk (with ``downloadable_id`` set when
    it is a benchmark id that the Hub may hold).
    """
    text = os.fspath(source)
    path = Path(text).expanduser()
    is_path = isinstance(source, Path) or os.sep in text or bool(os.altsep and os.altsep in text)
    if not is_path:
        under_root = _folder_under_root(text, root)
        if under_root is not None:
            return under_root
    if (path / MANIFEST_NAME).is_file():
        return path
    if is_path:
        raise DatasetNotFoundError(f"no lqv-d4rl dataset at {path} ({MANIFEST_NAME} not found)")
    dataset_id = check_dataset_id(text)
    folder = dataset_path(dataset_id, root)
    if (folder / MANIFEST_NAME).is_file():
        return folder
    if not looks_like_registry_id(dataset_id):
        raise DatasetNotFoundError(
            f"no dataset {dataset_id!r} in {dataset_root(root)} (and no folder of that name); "
            "pass the folder of a custom dataset, or the root (--root, root=) that holds it"
        )
    missing = DatasetNotFoundError(_not_found_message(dataset_id, folder, root))
    missing.downloadable_id = dataset_id  # lqv_d4rl.dataset.resolve_dataset_folder can fetch it
    raise missing


def _folder_under_root(name: str, root) -> Path | None:
    """``<root>/<name>`` if it holds a dataset and ``name`` is a valid dataset id, else None."""
    try:
        folder = dataset_path(name, root)
    except UnknownDatasetError:
        return None
    return folder if (folder / MANIFEST_NAME).is_file() else None


def root_argument(root) -> str:
    """`` --root R`` to repeat the user's dataset root in a suggested command ('' without one)."""
    return "" if root is None else f" --root {shlex.quote(os.fspath(root))}"


def generate_hint(task: str, root=None, level: str | None = None) -> str:
    """How to make a task's datasets under ``root``: the measured CPU recipe (``sac-state``, the
    default behaviour) and the smoke recipe for a quick try, each a command with the user's
    ``--root`` (and ``--levels`` when one ``level`` is missing)."""
    at = root_argument(root)
    only = f" --levels {level}" if level else ""
    return (f"Make it on a CPU with `lqv-d4rl generate {task} --behaviour sac-state --preset "
            f"cpu{at}` (the measured "
            "CPU recipe, SAC on states: all three levels at the paper's sizes, checked against "
            f"Table 3); for a quick try, `lqv-d4rl generate {task} --preset smoke{only}{at}` "
            "makes tiny datasets in about a minute (a pipeline check, not the benchmark)")


def _not_found_message(dataset_id: str, folder: Path, root=None) -> str:
    task, level = parse_dataset_id(dataset_id)
    python_root = "" if root is None else f", root={os.fspath(root)!r}"
    return (
        f"dataset {dataset_id!r} is not in {folder}. {generate_hint(task, root, level)}; or "
        f"download it with `lqv-d4rl download {dataset_id}{root_argument(root)}` "
        f"(in Python: load_dataset({dataset_id!r}{python_root}, download=True)). Datasets live "
        "under --root (root= in Python) or $LQV_D4RL_ROOT (default ~/.lqv_d4rl)."
    )
