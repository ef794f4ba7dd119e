"""What a leaderboard runs: methods x datasets x seeds, checked in full before anything starts.

:func:`plan_grid` turns what a user typed (``--methods A,B --datasets walker_walk-*,cheetah_run-medium
--seeds 4 --preset paper``) into a :class:`Grid`, or raises one error that names every problem of its
kind: an unknown or uninstalled method, a method without the preset, an unknown dataset or task,
zero seeds, datasets missing under the root (unless ``download``), a dataset whose generation did
not finish or whose environment cannot be rebuilt here. Nothing is trained or written before it
returns.
"""

import difflib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import DatasetNotFoundError, LQVError, UnknownTaskError

REFERENCES = ("paper_table1", "paper")
"""Normalization references the leaderboard can score with (see :mod:`lqv_d4rl.scores`)."""


class GridError(LQVError, ValueError):
    """A leaderboard request that cannot be right (the message says what to change)."""


@dataclass(frozen=True)
class LeaderboardPreset:
    """Default grid of a leaderboard preset; the algorithms' preset of the same name sets each run."""

    name: str
    datasets: tuple
    """Dataset ids or patterns (``TASK-*``, ``all``)."""
    seeds: int
    """Training seeds per method and dataset (0 .. seeds-1)."""
    eval_episodes: int | None
    """Evaluation episodes per run (None: each algorithm preset's ``eval_episodes``)."""
    description: str


PRESETS = {
    "smoke": LeaderboardPreset(
        "smoke", ("walker_walk-medrep",), 2, None,
        "every installed method's smoke preset on the smoke walker_walk-medrep "
        "(`lqv-d4rl generate walker_walk --preset smoke`), 2 seeds: a pipeline check, not the "
        "benchmark (tens of minutes for seven methods on 2 CPU cores)"),
    "paper": LeaderboardPreset(
        "paper", ("all",), 4, 10,
        "the paper's Table 1 protocol: each method's paper preset on all 15 datasets, 4 seeds, "
        "10 evaluation episodes (a GPU job)"),
}
"""Leaderboard presets. Another algorithm preset name (e.g. ``released``) uses the ``paper`` grid."""


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid: a method trained on a dataset with one seed."""

    method: str
    dataset: str
    seed: int

    def folder(self, out):
        """The run folder: ``<out>/runs/<method>/<dataset>/seed<k>``."""
        return Path(out) / "runs" / self.method / self.dataset / f"seed{self.seed}"

    @property
    def label(self):
        """``method dataset seedK``, for messages."""
        return f"{self.method} {self.dataset} seed{self.seed}"


@dataclass
class Grid:
    """A checked leaderboard request (see :func:`plan_grid`)."""

    methods: list
    datasets: list
    seeds: list
    preset: str
    """The algorithms' preset every run uses."""
    eval_episodes: int | None = None
    root: str | None = None
    rgb_background: bool = False
    video_dir: str | None = None
    reference: str = "paper_table1"
    dataset_folders: dict = field(default_factory=dict)
    """dataset id -> its folder on this machine."""

    def runs(self):
        """Every :class:`RunSpec`, seed-major: all seed-0 runs first, so that a grid cut short
        still gives every method on every dataset."""
        return [RunSpec(method, dataset, seed) for seed in self.seeds for dataset in self.datasets
                for method in self.methods]

    def to_dict(self):
        """A JSON-able record of the request."""
        return asdict(self)


# ---------------------------------------------------------------------------------- parsing


def split_list(text):
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; a list or tuple passes through."""
    if text is None:
        return []
    items = text if isinstance(text, (list, tuple)) else str(text).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def expand_datasets(tokens):
    """Dataset ids from ids, ``TASK-*`` patterns and ``all``, in the benchmark's order, each once."""
    from ..registry import DATASET_IDS, parse_dataset_id
    from ..tasks import LEVELS, TASKS

    chosen = set()
    for token in split_list(tokens):
        if token == "all":
            chosen.update(DATASET_IDS)
        elif token.endswith("-*"):
            task = token[:-2]
            if task not in TASKS:
                close = difflib.get_close_matches(task, list(TASKS), n=1, cutoff=0.6)
                hint = f" Did you mean '{close[0]}-*'?" if close else ""
                raise UnknownTaskError(f"unknown task {task!r} in --datasets {token!r}.{hint} "
                                       f"Tasks: {', '.join(TASKS)}")
            chosen.update(f"{task}-{level}" for level in LEVELS)
        else:
            parse_dataset_id(token)  # raises UnknownDatasetError with a did-you-mean
            chosen.add(token)
    if not chosen:
        raise GridError("no datasets given; pass --datasets ID,ID, TASK-* or all")
    return [dataset_id for dataset_id in DATASET_IDS if dataset_id in chosen]


def check_methods(names, preset):
    """The methods, each installed and having ``preset``; raises one :class:`GridError` naming every
    bad one."""
    from .. import algorithms

    installed = algorithms.names()
    if not names:
        raise GridError("no methods given; pass --methods with some of: "
                        f"{', '.join(installed) or 'none installed'}")
    problems = []
    for name in dict.fromkeys(names):
        if name not in installed:
            problems.append(_unknown_method(name, installed))
            continue
        presets = algorithms.get(name).presets
        if preset not in presets:
            problems.append(f"{name} has no preset {preset!r} (it has {', '.join(presets)})")
    if problems:
        raise GridError("; ".join(problems))
    return list(dict.fromkeys(names))


def _unknown_method(name, installed):
    from .. import algorithms

    if name in algorithms.known_names():
        return (f"method {name!r} is not installed here (its module is missing); installed: "
                f"{', '.join(installed) or 'none'}")
    close = difflib.get_close_matches(name, installed, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown method {name!r}{hint}; installed: {', '.join(installed) or 'none'}"


def check_seeds(seeds):
    """``0 .. seeds-1`` for a positive count; a :class:`GridError` otherwise."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise GridError(f"--seeds must be a positive number of training seeds per method and "
                        f"dataset, got {seeds!r}")
    return list(range(seeds))


# ---------------------------------------------------------------------------------- datasets


def find_datasets(dataset_ids, root, *, download=False, echo=print):
    """``{id: folder}`` of every dataset, downloading missing ones when ``download``; otherwise one
    :class:`DatasetNotFoundError` names every missing dataset and how to get it."""
    from ..folders import find_dataset_folder, generate_hint
    from ..registry import dataset_root

    folders, missing = {}, []
    for dataset_id in dataset_ids:
        try:
            folders[dataset_id] = find_dataset_folder(dataset_id, root)
        except DatasetNotFoundError:
            missing.append(dataset_id)
    if missing and not download:
        tasks = list(dict.fromkeys(dataset_id.rsplit("-", 1)[0] for dataset_id in missing))
        how = generate_hint(tasks[0], root).replace("Make it", "make them", 1)
        others = _other_tasks_hint(tasks[1:])
        raise DatasetNotFoundError(
            f"{len(missing)} dataset{'s' if len(missing) > 1 else ''} of the grid "
            f"{'are' if len(missing) > 1 else 'is'} not in {dataset_root(root)}: "
            f"{', '.join(missing)}; pass --download to fetch them from the Hub, {how}{others}; "
            "or point --root at the folder that holds them")
    if missing:
        from ..hub import download_dataset

        for dataset_id in missing:
            echo(f"downloading {dataset_id} into {dataset_root(root)} ...")
            folders[dataset_id] = Path(download_dataset(dataset_id, root=root))
    return {dataset_id: folders[dataset_id] for dataset_id in dataset_ids}


def _other_tasks_hint(tasks):
    """`` (the same for TASK, ...)`` after the generate hint of a grid's first missing task ('' when
    there are no others)."""
    return f" (the same for {', '.join(tasks)})" if tasks else ""


def check_dataset_folders(folders, video_dir=None, rgb_background=False):
    """Refuse datasets that every run would fail on: unfinished generation, or an environment that
    cannot be rebuilt here (videos missing)."""
    from ..eval_env import env_kwargs_from_manifest
    from ..format import read_manifest

    problems = []
    for dataset_id, folder in folders.items():
        manifest = read_manifest(folder)
        if not manifest.get("complete"):
            problems.append(f"{dataset_id} in {folder} is incomplete (its generation did not "
                            "finish; rerun the command that made it)")
            continue
        try:
            env_kwargs_from_manifest(manifest, video_dir=video_dir, rgb_background=rgb_background)
        except LQVError as err:
            problems.append(f"{dataset_id}: {err}")
    if problems:
        raise GridError("; ".join(problems))


# ---------------------------------------------------------------------------------- the grid


def plan_grid(methods=None, datasets=None, seeds=None, *, preset="smoke", root=None,
              eval_episodes=None, rgb_background=False, video_dir=None, reference="paper_table1",
              download=False, echo=print):
    """Check a leaderboard request and return its :class:`Grid`.

    ``methods`` (names, or a comma-separated string; default: every installed algorithm),
    ``datasets`` (ids, ``TASK-*`` or ``all``; default: the preset's) and ``seeds`` (a count;
    default: the preset's) fill the grid; ``preset`` is the algorithms' preset (``smoke`` and
    ``paper`` also name the default grid, see :data:`PRESETS`). Datasets must be under ``root``
    unless ``download`` fetches them (before anything runs). Raises :class:`GridError` (usage),
    ``UnknownDatasetError`` / ``UnknownTaskError`` (a mistyped id or task) or
    ``DatasetNotFoundError`` (missing data), each naming every problem at once.
    """
    from .. import algorithms

    defaults = PRESETS.get(preset, PRESETS["paper"])
    if reference not in REFERENCES:
        raise GridError(f"--reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
    if eval_episodes is not None and (isinstance(eval_episodes, bool) or eval_episodes < 1):
        raise GridError(f"--eval-episodes must be at least 1, got {eval_episodes!r}")
    seed_list = check_seeds(defaults.seeds if seeds is None else seeds)
    method_list = check_methods(split_list(methods) or algorithms.names(), preset)
    dataset_list = expand_datasets(split_list(datasets) or list(defaults.datasets))
    folders = find_datasets(dataset_list, root, download=download, echo=echo)
    check_dataset_folders(folders, video_dir, rgb_background)
    return Grid(methods=method_list, datasets=dataset_list, seeds=seed_list, preset=preset,
                eval_episodes=eval_episodes if eval_episodes is not None else defaults.eval_episodes,
                root=None if root is None else str(root), rgb_background=rgb_background,
                video_dir=None if video_dir is None else str(video_dir), reference=reference,
                dataset_folders={key: str(value) for key, value in folders.items()})


def check_existing_runs(grid, out):
    """Refuse to mix runs made with another config into the table: every run folder of the grid
    that already holds a run must hold one of the same algorithm config (fields an algorithm lets
    change on resume, such as evaluation settings, excepted)."""
    from .. import algorithms
    from ..runs import read_run_config

    configs, clashes = {}, []
    for spec in grid.runs():
        folder = spec.folder(out)
        if not (folder / "config.json").exists():
            continue
        task = spec.dataset.rsplit("-", 1)[0]
        if (spec.method, task) not in configs:
            algorithm = algorithms.get(spec.method)
            wanted = algorithms.config_to_dict(algorithm.config(grid.preset, task=task))
            configs[(spec.method, task)] = (wanted, set(algorithm.resumable_fields))
        wanted, free = configs[(spec.method, task)]
        recorded = read_run_config(folder)
        changed = sorted(key for key in wanted if key not in free
                         and recorded.get("config", {}).get(key) != wanted[key])
        if changed:
            clashes.append(f"{folder} (preset {recorded.get('preset')!r}; differs in "
                           f"{', '.join(changed[:4])}{', ...' if len(changed) > 4 else ''})")
    if clashes:
        raise GridError(f"{len(clashes)} run folder(s) in {out} hold runs of another config than "
                        f"preset {grid.preset!r} asks for, e.g. {clashes[0]}; use another --out, "
                        "or the preset they were made with")

