"""Import episodes stored one per ``.npz`` file (DreamerV2 / V-D4RL / released LQV-D4RL layout).

Each file holds one episode in the entry convention this toolkit uses (entry t: observation o_t,
the action a_{t-1} that led to it, the reward and discount of that transition):

- ``image``: uint8 (L, 64, 64, 3), or channel-first (L, 3, 64, 64) as PyTorch-style pipelines
  store it (detected from the shape and transposed on import);
- ``action`` (L, A), ``reward`` (L,) or (L, 1), ``discount`` (L,) or (L, 1);
- optionally ``is_first``, ``is_last``, ``is_terminal``. Missing flags are rebuilt from the
  convention: is_first at entry 0, is_last at the final entry, is_terminal where discount == 0.

The files hold no low-dimensional states or simulator states, so an imported dataset (format
version 2) stores neither ``state`` nor ``physics``; ``lqv-d4rl rerender`` cannot use it.

V-D4RL names its files ``<timestamp>-<index>-<length>.npz``; files are imported in sorted name
order, so the same folder always gives the same dataset. No file records which policy collected
it: a policy map (CSV or JSON: file name or glob pattern -> policy id [, policy step]) or one
policy id for all files says so; without either, episodes are marked ``"unknown"``.

Every file is checked (keys, shapes, dtypes, the entry convention) before anything is written, so
a bad file is reported by name without leaving a half-written dataset behind; only damaged pixel
data, which is not decompressed until it is written, can stop an import half-way, and
``resume=True`` (CLI: ``--resume``) then continues it.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import LQVError
from .tasks import get_task

REQUIRED_KEYS = ("image", "action", "reward", "discount")
FLAG_KEYS = ("is_first", "is_last", "is_terminal")
IMAGE_SIZE = 64
UNKNOWN_POLICY = "unknown"
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
"""What numpy and zipfile raise for truncated, damaged or non-npz files."""


class NpzImportError(LQVError, ValueError):
    """An npz episode file, folder or policy map that cannot be imported as it is."""


@dataclass(frozen=True)
class PolicyAssignment:
    """The behaviour policy that collected an episode."""

    policy_id: str
    policy_step: int = -1


@dataclass(frozen=True)
class PolicyRule:
    """One row of a policy map: a file name or glob pattern and the policy it stands for."""

    pattern: str
    assignment: PolicyAssignment


@dataclass(frozen=True)
class EpisodeFileLayout:
    """What checking one episode file learned about it."""

    path: Path
    length: int
    channel_first: bool


def import_npz_dir(
    source_dir,
    dataset_id: str,
    *,
    task: str | None = None,
    level: str | None = None,
    root=None,
    policy_map=None,
    policy_id: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool | None = None,
) -> Path:
    """Convert a folder of one-episode ``.npz`` files into a dataset ``<root>/<dataset_id>/``.

    ``task`` and ``level`` default to those of a registry ``dataset_id`` (``walker_walk-medrep``);
    any other id needs ``task`` (``level`` then defaults to ``"custom"``). ``policy_map`` is a CSV
    or JSON file mapping file names or glob patterns to policy ids; ``policy_id`` is the policy of
    every file the map does not name (or of all files without a map). Returns the dataset folder.
    ``resume`` continues an import that stopped half-way (the same files, in the same order).
    ``progress`` shows a tqdm bar (default: when stderr is a terminal).
    Raises :class:`NpzImportError` naming the offending file for bad input, and the format's
    ``DatasetExistsError`` when the dataset exists and neither ``overwrite`` nor ``resume`` is set.
    """
    from tqdm import tqdm

    from .format import ShardWriter
    from .locks import dataset_lock
    from .registry import dataset_path

    task, level = resolve_task_and_level(dataset_id, task, level)
    files = find_episode_files(source_dir)
    rules = read_policy_map(policy_map) if policy_map is not None else []
    assignments = assign_policies([path.name for path in files], rules, policy_id)
    action_dim = get_task(task).action_dim
    layouts = [check_episode_file(path, action_dim) for path in files]

    folder = dataset_path(dataset_id, root)
    provenance = {
        "source": "npz-import",
        "source_dir": str(Path(source_dir).resolve()),
        "source_files": [path.name for path in files],
        "policy_map": str(Path(policy_map).resolve()) if policy_map is not None else None,
    }
    with dataset_lock(folder, "import-npz"):  # one writer per dataset folder
        try:
            writer = ShardWriter(
                folder,
                dataset_id=dataset_id,
                task=task,
                level=level,
                action_dim=action_dim,
                provenance=provenance,
                overwrite=overwrite,
                resume=resume,
            )
        except ValueError as err:  # e.g. resuming a folder that holds another dataset
            raise NpzImportError(str(err)) from None
        done = writer.num_episodes
        if done:
            _check_resumable(writer.manifest, provenance["source_files"], folder)
        bar = tqdm(total=len(files), initial=done, desc=f"importing {dataset_id}", unit="episode",
                   disable=None if progress is None else not progress)
        with writer, bar:
            for number in range(done, len(files)):
                layout, assignment = layouts[number], assignments[number]
                try:
                    writer.add_episode(
                        read_episode_file(layout),
                        policy_id=assignment.policy_id,
                        policy_step=assignment.policy_step,
                    )
                except ValueError as err:  # also NpzImportError, which names the file already
                    message = str(err) if isinstance(err, NpzImportError) else f"{layout.path}: {err}"
                    raise NpzImportError(
                        f"{message}. {folder} was left incomplete with the {number} episode(s) "
                        "before this file; fix or remove the file and import again with --resume "
                        "(or --overwrite to start over)"
                    ) from None
                bar.update()
    return folder


def _check_resumable(manifest: dict, file_names: list, folder: Path) -> None:
    """A resumed import must see the files the interrupted one started with."""
    started_with = manifest.get("provenance", {}).get("source_files")
    if started_with != file_names:
        raise NpzImportError(
            f"cannot resume the import into {folder}: it was started from another set of "
            f"files ({len(started_with or [])} files, now {len(file_names)}); use --overwrite "
            "to start over"
        )


def resolve_task_and_level(dataset_id: str, task: str | None, level: str | None):
    """Task and level of the dataset to create, checked against the registry id if it is one."""
    from .registry import DATASET_IDS, check_dataset_id, parse_dataset_id

    if dataset_id in DATASET_IDS:
        registry_task, registry_level = parse_dataset_id(dataset_id)
        checks = (("task", task, registry_task), ("level", level, registry_level))
        for name, given, expected in checks:
            if given is not None and given != expected:
                raise NpzImportError(
                    f"--{name} {given!r} contradicts the dataset id {dataset_id!r} "
                    f"(its {name} is {expected!r}); leave --{name} out or pick another id"
                )
        return registry_task, registry_level
    check_dataset_id(dataset_id)  # a near-miss of a registry id gets suggestions
    if task is None:
        raise NpzImportError(
            f"{dataset_id!r} is not a registry id (like 'walker_walk-medrep'), so say which task "
            "the episodes come from with --task"
        )
    get_task(task)  # raises UnknownTaskError listing the valid tasks
    return task, level or "custom"


def find_episode_files(source_dir) -> list[Path]:
    """The ``.npz`` files directly inside ``source_dir``, sorted by name."""
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        raise NpzImportError(
            f"{source_dir}: not a folder; give the folder that holds the .npz files"
        )
    files = sorted(path for path in source_dir.glob("*.npz") if path.is_file())
    if not files:
        raise NpzImportError(
            f"{source_dir}: no .npz files in this folder (expected one episode per file, "
            "e.g. V-D4RL's '<timestamp>-<index>-<length>.npz')"
        )
    return files


def read_policy_map(path) -> list[PolicyRule]:
    """Read a policy map file: CSV rows ``pattern,policy_id[,policy_step]`` or JSON.

    CSV: an optional header row (first cell ``file`` or ``pattern``), ``#`` comments and blank
    lines are skipped. JSON: an object ``{pattern: policy_id}`` or ``{pattern: {"policy_id": ...,
    "policy_step": ...}}``, or a list of objects with ``pattern`` (or ``file``), ``policy_id`` and
    optional ``policy_step``. Rules keep the file's order.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise NpzImportError(f"{path}: cannot read the policy map: {err}") from None
    if path.suffix.lower() == ".json":
        rules = _policy_rules_from_json(path, text)
    else:
        rules = _policy_rules_from_csv(path, text)
    if not rules:
        raise NpzImportError(f"{path}: the policy map has no rules")
    return rules


def assign_policies(file_names, rules, default_policy_id: str | None) -> list[PolicyAssignment]:
    """The policy of each file: an exact-name rule first, else the first matching glob rule.

    Files no rule matches get ``default_policy_id``; without a default that is an error when
    there are rules (a map that misses files is most likely a mistake) and ``"unknown"`` when
    there are none.
    """
    exact = {rule.pattern: rule.assignment for rule in rules}
    fallback = None
    if default_policy_id is not None:
        fallback = PolicyAssignment(default_policy_id)
    elif not rules:
        fallback = PolicyAssignment(UNKNOWN_POLICY)
    assignments, unmatched = [], []
    for name in file_names:
        assignment = exact.get(name)
        if assignment is None:
            assignment = next(
                (rule.assignment for rule in rules if fnmatch.fnmatchcase(name, rule.pattern)),
                fallback,
            )
        if assignment is None:
            unmatched.append(name)
        assignments.append(assignment)
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (" ..." if len(unmatched) > 5 else "")
        raise NpzImportError(
            f"the policy map names no policy for {len(unmatched)} file(s): {shown}; add rules "
            "for them (a '*' pattern catches all) or give --policy-id for the rest"
        )
    return assignments


def check_episode_file(path: Path, action_dim: int) -> EpisodeFileLayout:
    """Check one file completely except for its pixels, which stay compressed on disk.

    Keys, shapes and dtypes come from the array headers; the small arrays (action, reward,
    discount, flags) are loaded and checked against the entry convention with the format's own
    ``validate_episode``, the image standing in as a zero-copy placeholder of the right shape.
    """
    from .format import validate_episode

    headers = _read_npz_headers(path)
    missing = [key for key in REQUIRED_KEYS if key not in headers]
    if missing:
        raise NpzImportError(
            f"{path}: missing key(s) {', '.join(missing)} (found: {', '.join(sorted(headers))}); "
            f"each episode file needs {', '.join(REQUIRED_KEYS)}"
        )
    image_shape, image_dtype = headers["image"]
    channel_first = _image_layout(path, image_shape, image_dtype)
    length = image_shape[0]
    for key in REQUIRED_KEYS + FLAG_KEYS:
        if key in headers and headers[key][0][:1] != (length,):
            raise NpzImportError(
                f"{path}: inconsistent lengths: 'image' has {length} entries but {key!r} has "
                f"shape {headers[key][0]}"
            )
    action_shape = headers["action"][0]
    if action_shape[1:] != (action_dim,):
        raise NpzImportError(
            f"{path}: 'action' has shape {action_shape}, expected ({length}, {action_dim}) for "
            "this task; is --task right?"
        )
    layout = EpisodeFileLayout(path, length, channel_first)
    placeholder = np.broadcast_to(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8),
                                  (length, IMAGE_SIZE, IMAGE_SIZE, 3))
    steps = _load_steps(layout, placeholder_image=placeholder)
    try:
        validate_episode(steps, action_dim)
    except ValueError as err:
        raise NpzImportError(f"{path}: {err}") from None
    return layout


def read_episode_file(layout: EpisodeFileLayout) -> dict:
    """Load one checked episode file as a step dict in this toolkit's keys and dtypes."""
    return _load_steps(layout)


def _load_steps(layout: EpisodeFileLayout, placeholder_image=None) -> dict:
    """The step dict of a file; with ``placeholder_image`` the pixels are not read."""
    path = layout.path
    wanted = [key for key in (*REQUIRED_KEYS, *FLAG_KEYS)
              if not (key == "image" and placeholder_image is not None)]
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in wanted if key in data.files}
    except _READ_ERRORS as err:
        raise NpzImportError(f"{path}: cannot read the npz file: {err}") from None
    if placeholder_image is not None:
        image = placeholder_image
    elif layout.channel_first:
        image = np.ascontiguousarray(arrays["image"].transpose(0, 2, 3, 1))
    else:
        image = arrays["image"]
    steps = {"image": image, "action": arrays["action"]}
    for key in ("reward", "discount"):
        steps[key] = arrays[key].reshape(-1)
    steps.update(_flags(arrays, steps["discount"]))
    return steps


def _flags(arrays: dict, discount: np.ndarray) -> dict:
    """is_first / is_last / is_terminal from the file, or rebuilt from the entry convention."""
    length = len(discount)
    rebuilt = {
        "is_first": np.arange(length) == 0,
        "is_last": np.arange(length) == length - 1,
        "is_terminal": discount == 0,
    }
    return {
        key: arrays[key].reshape(-1).astype(bool) if key in arrays else rebuilt[key]
        for key in FLAG_KEYS
    }


def _image_layout(path: Path, shape: tuple, dtype: np.dtype) -> bool:
    """Whether images are channel-first; raises for anything but 64x64 RGB uint8."""
    if dtype != np.uint8:
        raise NpzImportError(f"{path}: 'image' has dtype {dtype}; expected uint8 pixels")
    if len(shape) == 4 and shape[1:] == (IMAGE_SIZE, IMAGE_SIZE, 3):
        return False
    if len(shape) == 4 and shape[1:] == (3, IMAGE_SIZE, IMAGE_SIZE):
        return True
    raise NpzImportError(
        f"{path}: 'image' has shape {shape}; expected (L, {IMAGE_SIZE}, {IMAGE_SIZE}, 3) or "
        f"channel-first (L, 3, {IMAGE_SIZE}, {IMAGE_SIZE}) (use the 64px release of V-D4RL)"
    )


def _read_npz_headers(path: Path) -> dict:
    """Shape and dtype of every array in an npz archive, read from the .npy headers only."""
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as stream:
                    version = np.lib.format.read_magic(stream)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
                headers[member[: -len(".npy")]] = (tuple(shape), np.dtype(dtype))
    except _READ_ERRORS as err:
        raise NpzImportError(f"{path}: cannot read the npz file: {err}") from None
    return headers


def _policy_rules_from_csv(path: Path, text: str) -> list[PolicyRule]:
    rules = []
    for line_number, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [cell.strip() for cell in row]
        if not cells or not cells[0] or cells[0].startswith("#"):
            continue
        if line_number == 1 and cells[0].lower() in ("file", "pattern", "file_name", "filename"):
            continue
        if len(cells) not in (2, 3) or not cells[1]:
            raise NpzImportError(
                f"{path}, line {line_number}: expected 'pattern,policy_id[,policy_step]', "
                f"got {row!r}"
            )
        step = cells[2] if len(cells) == 3 else None
        rules.append(_make_rule(path, f"line {line_number}", cells[0], cells[1], step))
    return rules


def _policy_rules_from_json(path: Path, text: str) -> list[PolicyRule]:
    try:
        content = json.loads(text)
    except json.JSONDecodeError as err:
        raise NpzImportError(f"{path}: not valid JSON: {err}") from None
    if isinstance(content, dict):
        entries = [
            (pattern, value if isinstance(value, dict) else {"policy_id": value})
            for pattern, value in content.items()
        ]
    elif isinstance(content, list) and all(isinstance(item, dict) for item in content):
        entries = [(item.get("pattern", item.get("file")), item) for item in content]
    else:
        raise NpzImportError(
            f"{path}: expected an object {{pattern: policy_id}} or a list of objects with "
            "'pattern', 'policy_id' and optional 'policy_step'"
        )
    return [
        _make_rule(
            path, f"entry {pattern!r}", pattern, entry.get("policy_id"), entry.get("policy_step")
        )
        for pattern, entry in entries
    ]


def _make_rule(path: Path, where: str, pattern, policy_id, policy_step) -> PolicyRule:
    if not isinstance(pattern, str) or not pattern:
        raise NpzImportError(f"{path}, {where}: the file name or pattern is missing")
    if not isinstance(policy_id, (str, int)) or isinstance(policy_id, bool) or policy_id == "":
        raise NpzImportError(f"{path}, {where}: the policy id is missing or not a string")
    try:
        step = -1 if policy_step in (None, "") else int(policy_step)
    except (TypeError, ValueError):
        raise NpzImportError(
            f"{path}, {where}: policy step {policy_step!r} is not an integer"
        ) from None
    return PolicyRule(pattern, PolicyAssignment(str(policy_id), step))
