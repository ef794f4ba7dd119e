"""CLI verbs that look at, check, convert and export datasets on disk.

``list``, ``info``, ``verify``, ``preview``, ``import-npz`` and ``export-minari``. A dataset is
named either by id (a benchmark id such as ``walker_walk-medrep`` or a custom name, looked up under
the dataset root) or by path (any argument with a ``/``, or a bare name that is no dataset under
the root but a folder holding a ``manifest.json`` in the working directory).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import click

from ..errors import LQVError
from .hints import cli_error, dataset_hint
from .options import check_repo_id, root_option


def _friendly_errors(command):
    """Report the toolkit's own errors as one-line messages instead of tracebacks (exit 2 for a
    mistyped name, with a did-you-mean for the DATASET argument)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except LQVError as err:
            raise cli_error(err, [kwargs.get("dataset", "")]) from None

    return wrapper


# --------------------------------------------------------------------------------------- list


@click.command("list")
@root_option
@click.option("--remote", is_flag=True, help="List the datasets a Hugging Face Hub repo holds.")
@click.option("--repo-id", default=None, callback=check_repo_id,
              help="Hub repo (default: $LQV_D4RL_HUB_REPO or lqv-d4rl/lqv-d4rl).")
@click.option("--revision", default=None, help="Hub branch, tag or commit (with --remote).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@_friendly_errors
def list_command(root, remote, repo_id, revision, as_json):
    """List the 15 benchmark datasets with what is on disk of each (its real episode count) next
    to the paper's episode count, plus custom datasets."""
    from ..registry import dataset_root

    if remote:
        rows = _remote_rows(root, repo_id, revision)
    else:
        rows = _registry_rows(root) + _custom_rows(root)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if remote:
        from ..hub import hub_settings

        click.echo(f"Datasets in hub repo {hub_settings(repo_id).repo_id} @ {revision or 'main'}:")
        if not rows:
            click.echo("  (none)")
            return
        columns = ("dataset_id", "local")
    else:
        click.echo(f"Datasets under {dataset_root(root)}:")
        rows = [{**row, "on disk": row["local"], "paper": _paper_count(row)} for row in rows]
        columns = ("dataset_id", "task", "level", "on disk", "paper")
    click.echo(_text_table(rows, columns))


def _paper_count(row) -> str:
    """The ``paper`` cell of ``list``: the paper's episode count ('-' for a custom dataset)."""
    return "-" if row["paper_episodes"] is None else f"{row['paper_episodes']} episodes"


def _registry_rows(root) -> list[dict]:
    from ..registry import DATASET_IDS, dataset_path, get_recipe

    rows = []
    for dataset_id in DATASET_IDS:
        recipe = get_recipe(dataset_id)
        folder = dataset_path(dataset_id, root)
        rows.append(
            {
                "dataset_id": dataset_id,
                "task": recipe.task,
                "level": recipe.level,
                "episodes": _episodes_on_disk(folder),
                "paper_episodes": recipe.episodes,
                "local": local_status(folder),
                "custom": False,
            }
        )
    return rows


def _episodes_on_disk(folder: Path) -> int | None:
    """Episodes the manifest in ``folder`` records (finished shards only), or None without one."""
    from ..format import read_manifest

    try:
        return int(read_manifest(folder).get("num_episodes", 0))
    except (LQVError, OSError):
        return None


def _custom_rows(root) -> list[dict]:
    """Datasets in the root that are not benchmark ids (imported or self-made ones)."""
    from ..format import read_manifest
    from ..registry import DATASET_IDS, dataset_root

    folder = dataset_root(root)
    if not folder.is_dir():
        return []
    rows = []
    for candidate in sorted(folder.iterdir()):
        # Hidden folders are work in progress (e.g. a download's staging folder), not datasets.
        hidden = candidate.name.startswith(".")
        if hidden or candidate.name in DATASET_IDS or not (candidate / "manifest.json").is_file():
            continue
        try:
            manifest = read_manifest(candidate)
        except LQVError:
            manifest = {}
        rows.append(
            {
                "dataset_id": candidate.name,
                "task": manifest.get("task", "?"),
                "level": manifest.get("level", "?"),
                "episodes": manifest.get("num_episodes"),
                "paper_episodes": None,
                "local": local_status(candidate),
                "custom": True,
            }
        )
    return rows


def _remote_rows(root, repo_id, revision) -> list[dict]:
    from ..hub import list_remote_datasets
    from ..registry import dataset_path

    rows = []
    for dataset_id in list_remote_datasets(repo_id=repo_id, revision=revision):
        try:
            status = local_status(dataset_path(dataset_id, root))
        except LQVError:  # a repo folder whose name is no valid dataset id
            status = "-"
        rows.append({"dataset_id": dataset_id, "local": status})
    return rows


def local_status(folder: Path) -> str:
    """A phrase on a dataset folder: missing, complete (n episodes), incomplete (k episodes), damaged.

    Cheap: reads the manifest and checks that each shard exists with its recorded size; the
    checksums are ``verify``'s job.
    """
    from ..format import read_manifest

    if not folder.is_dir():
        return "missing"
    if not (folder / "manifest.json").is_file():
        return "damaged (no manifest.json)"
    try:
        manifest = read_manifest(folder)
    except LQVError:
        return "damaged (unreadable manifest)"
    for shard in manifest.get("shards", []):
        path = folder / shard["file"]
        if not path.is_file():
            return f"damaged ({shard['file']} missing)"
        if "bytes" in shard and path.stat().st_size != shard["bytes"]:
            return f"damaged ({shard['file']} has the wrong size)"
    episodes = manifest.get("num_episodes", 0)
    if not manifest.get("complete", False):
        return f"incomplete ({episodes} episodes so far)"
    return f"complete ({episodes} episodes)"


def _text_table(rows: list[dict], columns) -> str:
    lines = [list(columns)] + [[str(row[column]) for column in columns] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
        for line in lines
    )


# --------------------------------------------------------------------------------------- info


@click.command("info")
@click.argument("dataset")
@root_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@_friendly_errors
def info_command(dataset, root, as_json):
    """Return statistics (Table-3 style), policies, size and provenance of DATASET (id or path)."""
    from ..dataset import resolve_dataset_folder

    folder = resolve_dataset_folder(dataset, root)
    report = dataset_report(folder)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(format_dataset_report(report))


def dataset_report(folder: Path) -> dict:
    """Everything ``info`` shows about the dataset in ``folder``, as a JSON-able dict."""
    from ..dataset import load_dataset
    from ..format import read_manifest
    from ..registry import DATASET_IDS, get_recipe
    from ..fidelity import fidelity_verdicts
    from ..stats import return_statistics, summarize_policies

    manifest = read_manifest(folder)
    data = load_dataset(folder, lazy=True, verify=False, allow_partial=True)
    dataset_id = manifest.get("dataset_id", folder.name)
    paper, fidelity = None, None
    if dataset_id in DATASET_IDS:
        recipe = get_recipe(dataset_id)
        paper = {"episodes": recipe.episodes, **recipe.paper_returns}
        fidelity = [verdict.to_dict()
                    for verdict in fidelity_verdicts(recipe.task, recipe.level, data.returns)]
    provenance = manifest.get("provenance", {})
    return {
        "dataset_id": dataset_id,
        "folder": str(folder),
        "task": manifest.get("task", data.task),
        "level": manifest.get("level"),
        "complete": bool(manifest.get("complete", False)),
        "num_episodes": len(data),
        "paper_episodes": None if paper is None else paper["episodes"],
        "num_steps": int(data.num_steps),
        "returns": return_statistics(data.returns),
        "paper_returns": paper,
        "fidelity": fidelity,
        "policies": summarize_policies(data.policy_ids, data.returns, data.policy_steps),
        "bytes_on_disk": _bytes_on_disk(folder),
        "bytes_in_memory": _bytes_in_memory(manifest, int(data.num_steps)),
        "provenance": {
            "distractor": provenance.get("distractor"),
            "seed": provenance.get("seed"),
            "code_version": provenance.get("code_version"),
            "created": provenance.get("created"),
            "source": provenance.get("source"),
            "note": _unmatched_medium_note(manifest.get("level"), provenance),
        },
    }


def _unmatched_medium_note(level, provenance: dict):
    """What ``info`` says of a medium level recorded from the closest candidate
    (``generate --record-closest-medium``), else None."""
    medium = (provenance.get("training_run") or {}).get("medium_policy") or {}
    if level != "medium" or not medium.get("recorded_without_match"):
        return None
    return (f"{medium['policy_id']} is the medium search's closest candidate when the training "
            f"budget ended: no snapshot matched Table 3's medium row "
            f"(generate --record-closest-medium)")


def format_dataset_report(report: dict) -> str:
    """The text ``info`` prints for a :func:`dataset_report`."""
    from ..stats import format_bytes, format_policy_summary, format_statistics_table

    rows = [(report["dataset_id"], report["returns"])]
    if report["paper_returns"] is not None:
        rows.append(("paper (Table 3)", report["paper_returns"]))
    episodes = report["num_episodes"]
    provenance = report["provenance"]
    lines = [
        f"{report['dataset_id']}  (task {report['task']}, level {report['level']}"
        f"{'' if report['complete'] else ', INCOMPLETE'})",
        f"folder: {report['folder']}",
        episodes_line(report),
        "",
        "Episodic return:",
        format_statistics_table(rows),
        *fidelity_lines(report),
        "",
        f"steps: {report['num_steps']} entries in {episodes} episodes "
        f"({report['num_steps'] - episodes} agent steps)",
        f"size: {format_bytes(report['bytes_on_disk'])} on disk, "
        f"{format_bytes(report['bytes_in_memory'])} in RAM (uncompressed)",
        "",
        f"Policies: {len(report['policies'])}",
        format_policy_summary(report["policies"]),
        "",
        "Provenance:",
        f"  distractor:   {_describe_distractor(provenance['distractor'])}",
        f"  seed:         {_or_unknown(provenance['seed'])}",
        f"  code version: {_or_unknown(provenance['code_version'])}",
        f"  created:      {_or_unknown(provenance['created'])}",
    ]
    if provenance.get("source"):
        lines.append(f"  source:       {provenance['source']}")
    if provenance.get("note"):
        lines.append(f"  note:         {provenance['note']}")
    return "\n".join(lines)


def fidelity_lines(report: dict) -> list:
    """The fidelity checks against Table 3 (lqv_d4rl.fidelity) as lines, for a benchmark id."""
    if not report.get("fidelity"):
        return []
    from ..fidelity import Verdict, all_passed, format_verdicts

    verdicts = [Verdict.from_dict(values) for values in report["fidelity"]]
    return ["", "Against the paper's Table 3 (tolerances in DATASETS.md): "
                + ("faithful" if all_passed(verdicts) else "NOT within the tolerances"),
            format_verdicts([(report["dataset_id"], verdicts)])]


def episodes_line(report: dict) -> str:
    """``episodes: 155 (paper: 400)`` where the count differs from the paper's recipe,
    ``episodes: 200 (as in the paper)`` where it agrees, ``episodes: 6`` for a custom dataset."""
    episodes, paper = report["num_episodes"], report.get("paper_episodes")
    so_far = "" if report["complete"] else " so far"
    if paper is None:
        return f"episodes: {episodes}{so_far}"
    if episodes == paper:
        return f"episodes: {episodes}{so_far} (as in the paper)"
    return f"episodes: {episodes}{so_far} (paper: {paper})"


def _describe_distractor(description) -> str:
    if not description:
        return "unknown"
    if not isinstance(description, dict):
        return str(description)
    kind = description.get("kind", "?")
    details = ", ".join(f"{key}={value}" for key, value in description.items() if key != "kind")
    return f"{kind} ({details})" if details else str(kind)


def _or_unknown(value) -> str:
    return "unknown" if value is None else str(value)


def _bytes_on_disk(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file())


def _bytes_in_memory(manifest: dict, num_steps: int) -> int:
    """Bytes of the step arrays once loaded: uint8 images, float32 action/reward/discount, flags."""
    from ..format import step_bytes

    return step_bytes(manifest["spaces"]["action"]["shape"][0]) * num_steps


# ------------------------------------------------------------------------------------- verify


@click.command("verify")
@click.argument("dataset")
@root_option
@click.option("--require-complete", is_flag=True,
              help="Count an unfinished (incomplete) dataset as bad too.")
@_friendly_errors
def verify_command(dataset, root, require_complete):
    """Check DATASET's checksums and schema; exit code 1 names each bad file."""
    from ..dataset import resolve_dataset_folder
    from ..format import read_manifest, verify_dataset

    folder = resolve_dataset_folder(dataset, root)
    problems = verify_dataset(folder, require_complete=require_complete)
    if problems:
        for problem in problems:
            click.echo(f"BAD  {problem}")
        click.echo(f"{folder}: {len(problems)} problem(s) found", err=True)
        raise click.exceptions.Exit(1)
    manifest = read_manifest(folder)
    unfinished = "" if manifest.get("complete") else " (INCOMPLETE: not finished writing)"
    click.echo(
        f"OK   {folder}: {len(manifest.get('shards', []))} shard(s), "
        f"{manifest.get('num_episodes', 0)} episodes; checksums and schema verified{unfinished}"
    )


# ------------------------------------------------------------------------------------ preview


PNG_EPISODES = 4
"""Episodes a default PNG preview shows, spread evenly over the dataset (first and last too)."""
PNG_FRAMES = 8
"""Frames per episode of a default PNG preview, spread evenly over the episode."""


@click.command("preview")
@click.argument("dataset")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output file: .gif (animation) or .png (contact sheet, one labelled row per "
                   "episode: episode index, policy, return, and each frame's step).")
@click.option("--episodes", default=None,
              show_default=f"PNG: {PNG_EPISODES} spread over the dataset; GIF: 0",
              help="Comma-separated episode indices, e.g. 0,3.")
@click.option("--frames", type=click.IntRange(min=1), default=None,
              show_default=f"PNG: {PNG_FRAMES} spread over each episode; GIF: all",
              help="Frames per episode.")
@click.option("--every", type=click.IntRange(min=1), default=None,
              show_default="1 for a GIF; a PNG spreads its frames instead",
              help="Take every K-th frame from the episode's start.")
@click.option("--fps", type=click.IntRange(min=1), default=15, show_default=True,
              help="Frames per second of the GIF (ignored for a PNG).")
@click.option("--scale", type=click.IntRange(min=1), default=2, show_default=True,
              help="Enlarge each 64x64 frame this many times (nearest neighbour).")
@root_option
@_friendly_errors
def preview_command(dataset, out, episodes, frames, every, fps, scale, root):
    """Write a GIF or a labelled PNG contact sheet of DATASET's episodes."""
    from ..dataset import load_dataset, resolve_dataset_folder

    suffix = out.suffix.lower()
    if suffix not in (".gif", ".png"):
        raise click.BadParameter("the file must end in .gif or .png", param_hint="--out")
    folder = resolve_dataset_folder(dataset, root)
    data = load_dataset(folder, lazy=True, verify=False, allow_partial=True)
    if len(data) == 0:
        raise click.ClickException(f"{folder} holds no finished episode yet: nothing to preview "
                                   "(let the command that writes it finish a shard first)")
    if episodes is None:
        indices = spread(len(data), PNG_EPISODES) if suffix == ".png" else [0]
    else:
        indices = _parse_episode_indices(episodes, len(data))
    if suffix == ".png":
        path = _write_png_preview(data, indices, out, frames=frames or PNG_FRAMES, every=every,
                                  scale=scale)
        what = "labelled PNG"
    else:
        path = _write_gif_preview(data, indices, out, frames=frames, every=every or 1, fps=fps,
                                  scale=scale)
        what = "GIF"
    click.echo(f"Wrote {path} ({what} of episode(s) {', '.join(map(str, indices))})")


def spread(count: int, wanted: int) -> list[int]:
    """``wanted`` indices spread evenly over ``range(count)``, first and last included (fewer when
    ``count`` is smaller)."""
    import numpy as np

    return sorted({int(i) for i in np.round(np.linspace(0, count - 1, min(wanted, count)))})


def _preview_steps(length: int, frames: int | None, every: int | None) -> list[int]:
    """Which entries of an episode of ``length`` to show: every ``every``-th from the start (at most
    ``frames``), or, without ``every``, ``frames`` spread evenly over the episode."""
    if every is not None or frames is None:
        steps = list(range(0, length, every or 1))
        return steps if frames is None else steps[:frames]
    return spread(length, frames)


def _write_png_preview(data, indices, out, *, frames, every, scale):
    """One labelled row per episode (:func:`lqv_d4rl.images.save_labelled_sheet`)."""
    import numpy as np

    from ..images import SheetRow, save_labelled_sheet

    rows = []
    for index in indices:
        start, length = int(data.episode_starts[index]), int(data.episode_lengths[index])
        steps = _preview_steps(length, frames, every)
        images = np.asarray(data.images[[start + step for step in steps]])
        caption = (f"episode {index} | policy {data.policy_ids[index]} | "
                   f"return {float(data.returns[index]):.1f} | {length} entries")
        rows.append(SheetRow(images, caption, [f"step {step}" for step in steps]))
    return save_labelled_sheet(rows, out, scale=scale)


def _write_gif_preview(data, indices, out, *, frames, every, fps, scale):
    """The episodes' frames one after another as an animation."""
    import numpy as np

    from ..images import save_preview

    clips = [_episode_frames(data, index, every, frames) for index in indices]
    return save_preview(np.concatenate(clips), out, fps=fps, scale=scale)


def _parse_episode_indices(text: str, num_episodes: int) -> list[int]:
    try:
        indices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers",
                                 param_hint="--episodes") from None
    if not indices:
        raise click.BadParameter("give at least one episode index", param_hint="--episodes")
    bad = [index for index in indices if not 0 <= index < num_episodes]
    if bad:
        raise click.BadParameter(
            f"episode(s) {', '.join(map(str, bad))} out of range: the dataset has {num_episodes} "
            f"episodes (0..{num_episodes - 1})",
            param_hint="--episodes",
        )
    return indices


def _episode_frames(data, index: int, every: int, frames: int | None):
    import numpy as np

    start = int(data.episode_starts[index])
    stop = start + int(data.episode_lengths[index])
    clip = np.asarray(data.images[start:stop])[::every]
    return clip if frames is None else clip[:frames]


# --------------------------------------------------------------------------------- import-npz


@click.command("import-npz")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--id", "dataset_id", required=True,
              help="Dataset id to create: a benchmark id (walker_walk-medrep) or a custom name.")
@click.option("--task", default=None, help="Task of a custom id (benchmark ids imply it).")
@click.option("--level", default=None, help="Level of a custom id (default: custom).")
@root_option
@click.option("--policy-map", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None,
              help="CSV (pattern,policy_id[,policy_step]) or JSON: file names or globs -> policy.")
@click.option("--policy-id", default=None,
              help="Policy id of the files the map does not name (no map: all; default unknown).")
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset of that id.")
@click.option("--resume", is_flag=True, help="Continue an import that stopped half-way.")
@_friendly_errors
def import_npz_command(source, dataset_id, task, level, root, policy_map, policy_id, overwrite,
                       resume):
    """Import one-episode .npz files (DreamerV2 / V-D4RL layout) from SOURCE as a dataset."""
    from ..format import read_manifest
    from ..npz_import import import_npz_dir
    from ..registry import DATASET_IDS

    if overwrite and resume:
        raise click.UsageError("pass --overwrite or --resume, not both")
    hint = "" if dataset_id in DATASET_IDS else dataset_hint(dataset_id)
    if task is None and hint:  # a mistyped benchmark id, not a custom name
        raise click.BadParameter(f"{dataset_id!r} is no benchmark id.{hint} "
                                 "(A custom id needs --task.)", param_hint="--id")
    folder = import_npz_dir(
        source, dataset_id, task=task, level=level, root=root, policy_map=policy_map,
        policy_id=policy_id, overwrite=overwrite, resume=resume,
    )
    manifest = read_manifest(folder)
    click.echo(
        f"Imported {manifest['num_episodes']} episodes ({manifest['num_steps']} steps) "
        f"into {folder}"
    )


# ------------------------------------------------------------------------------ export-minari


def _check_minari_name(ctx, param, name):
    # minari's own parser fails with a TypeError, not a ValueError, on a name without -v<N>
    if not re.search(r"-v\d+$", name):
        raise click.BadParameter(
            f"{name!r} is not a Minari dataset id: it has no version; Minari wants "
            "'[namespace/]dataset_name-v<version>', e.g. 'lqv-d4rl/walker_walk-medrep-v0'")
    try:
        from minari.dataset.minari_dataset import parse_dataset_id
    except ImportError:
        return name  # the export itself says how to install minari
    try:
        parse_dataset_id(name)
    except (ValueError, TypeError) as err:
        raise click.BadParameter(f"{name!r} is not a Minari dataset id ({err})") from None
    return name


@click.command("export-minari")
@click.argument("dataset")
@click.option("--name", required=True, callback=_check_minari_name,
              help="Minari id '[namespace/]name-v<version>', e.g. lqv-d4rl/walker_walk-medrep-v0.")
@click.option("--minari-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Minari dataset root (default: $MINARI_DATASETS_PATH, else ~/.minari/datasets).")
@click.option("--overwrite", is_flag=True, help="Replace an existing Minari dataset of that name.")
@root_option
@_friendly_errors
def export_minari_command(dataset, name, minari_root, overwrite, root):
    """Export DATASET so that minari.load_dataset(NAME) loads it (needs the minari package)."""
    from ..dataset import resolve_dataset_folder
    from ..minari_export import export_to_minari

    folder = resolve_dataset_folder(dataset, root)
    target = export_to_minari(folder, name, minari_root=minari_root, overwrite=overwrite)
    hint = ""
    if minari_root is not None:
        hint = f" (with MINARI_DATASETS_PATH={Path(minari_root).resolve()})"
    click.echo(f"Exported to {target}; load it with minari.load_dataset({name!r}){hint}")


COMMANDS = [
    list_command,
    info_command,
    verify_command,
    preview_command,
    import_npz_command,
    export_minari_command,
]
