"""Reading the run folders of a leaderboard back into scores, table rows and provenance.

Everything here is rebuilt from the files in ``<out>/runs/`` (``config.json``, ``eval.json``,
``eval_rgb.json``, ``error.json``), so the tables can be made again at any time, by anyone, from
the folder alone, and a restarted leaderboard gives the same tables as an uninterrupted one.

A run's normalized score is the mean over its evaluation episodes of each episode's normalized
return (episodes are averaged within a seed first); a table cell is the mean and standard deviation
over seeds (population std, ``ddof=0``, as numpy and CORL compute it). Scores are recomputed from
the raw returns in ``eval.json`` with the chosen reference: ``paper_table1`` by default, the
constants the paper's Table 1 was computed with, so the paper's numbers beside ours compare like
with like (see :mod:`lqv_d4rl.scores`).
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..experiment import EVAL_RGB_NAME
from ..paper import paper_score
from ..runs import EVAL_NAME, read_run_config
from ..scores import get_normalized_score
from .runner import read_error

STATUSES = ("finished", "failed", "unfinished", "missing")


@dataclass
class RunRecord:
    """One run of the grid as found on disk."""

    method: str
    dataset: str
    seed: int
    status: str
    """``finished`` (eval.json), ``failed`` (error.json), ``unfinished`` (started, neither) or
    ``missing`` (never started)."""
    episodes: int = 0
    mean_return: float | None = None
    normalized_score: float | None = None
    rgb_normalized_score: float | None = None
    """Score over colour backgrounds (``eval_rgb.json``, the paper's Table 2), when evaluated."""
    error: str | None = None
    provenance: dict = field(default_factory=dict)
    """``manifest_sha256``, ``hub_commit``, ``code_version``, ``config_hash``, ``preset``, ``seed``,
    ``device``, ``train_seconds``, ``eval_seconds``, ``wall_seconds``, ``created``."""


def read_run(spec, out, reference="paper_table1"):
    """The :class:`RunRecord` of ``spec`` (a :class:`~lqv_d4rl.leaderboard.grid.RunSpec`) in ``out``."""
    folder = spec.folder(out)
    record = RunRecord(spec.method, spec.dataset, spec.seed, "missing")
    if not (folder / "config.json").exists():
        error = read_error(folder)
        if error is not None:  # failed before the run folder was made (e.g. a bad config)
            record.status, record.error = "failed", error["message"]
        return record
    config = read_run_config(folder)
    record.status = "unfinished"
    evaluation = _read_json(folder / EVAL_NAME)
    if evaluation is not None:
        task = spec.dataset.rsplit("-", 1)[0]
        returns = np.asarray(evaluation["returns"], dtype=np.float64)
        record.status = "finished"
        record.episodes = int(returns.size)
        record.mean_return = float(returns.mean())
        record.normalized_score = float(np.mean(get_normalized_score(task, returns, reference)))
        rgb = _read_json(folder / EVAL_RGB_NAME)
        if rgb is not None:
            record.rgb_normalized_score = float(np.mean(get_normalized_score(
                task, np.asarray(rgb["returns"], dtype=np.float64), reference)))
    else:
        error = read_error(folder)
        if error is not None:
            record.status, record.error = "failed", error["message"]
    record.provenance = _provenance(config, evaluation)
    return record


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _provenance(config, evaluation):
    fingerprint = config.get("dataset", {})
    commits = list(fingerprint.get("hub_commits") or [])
    train = evaluation.get("train_seconds") if evaluation else None
    evaluate = evaluation.get("seconds") if evaluation else None
    return {
        "manifest_sha256": fingerprint.get("manifest_sha256"),
        "hub_commit": ";".join(commits) or None,
        "code_version": config.get("code_version"),
        "config_hash": config.get("config_hash"),
        "preset": config.get("preset"),
        "seed": config.get("seed"),
        "device": config.get("device") + (f" (resumed on {config['resumed_on']})"
                                           if config.get("resumed_on") else ""),
        "train_seconds": train,
        "eval_seconds": evaluate,
        "wall_seconds": None if train is None else train + (evaluate or 0.0),
        "created": config.get("created"),
    }


def read_runs(grid, out):
    """Every run of ``grid`` in ``out``, as :class:`RunRecord` s in the grid's order."""
    return [read_run(spec, out, grid.reference) for spec in grid.runs()]


# ---------------------------------------------------------------------------------- cells


def _mean_std(values):
    if not values:
        return None, None
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std())


def _joined(values):
    """Distinct non-empty values joined by ';' (one value when every seed agrees)."""
    distinct = list(dict.fromkeys(str(value) for value in values if value not in (None, "")))
    return ";".join(distinct) or None


def cell_rows(grid, records):
    """One row per (dataset, method): mean and std over seeds of the normalized score and the raw
    return, the paper's Table 1 and Table 5 values beside them, run counts and provenance."""
    rows = []
    for dataset in grid.datasets:
        task, level = dataset.rsplit("-", 1)
        for method in grid.methods:
            runs = [r for r in records if r.dataset == dataset and r.method == method]
            done = [r for r in runs if r.status == "finished"]
            score, score_std = _mean_std([r.normalized_score for r in done])
            ret, ret_std = _mean_std([r.mean_return for r in done])
            rgb = [r.rgb_normalized_score for r in done if r.rgb_normalized_score is not None]
            rgb_mean, rgb_std = _mean_std(rgb)
            paper = paper_score(task, level, method) or (None, None)
            paper_raw = paper_score(task, level, method, "raw_returns") or (None, None)
            paper_rgb = (paper_score(task, level, method, "rgb_background_generalization")
                         or (None, None))
            provenance = [r.provenance for r in done]
            rows.append({
                "dataset": dataset, "task": task, "level": level, "method": method,
                "seeds": [r.seed for r in done], "finished": len(done),
                "failed": sum(r.status == "failed" for r in runs),
                "unfinished": sum(r.status in ("unfinished", "missing") for r in runs),
                "score_mean": score, "score_std": score_std,
                "paper_score_mean": paper[0], "paper_score_std": paper[1],
                "return_mean": ret, "return_std": ret_std,
                "paper_return_mean": paper_raw[0], "paper_return_std": paper_raw[1],
                "rgb_score_mean": rgb_mean, "rgb_score_std": rgb_std,
                "paper_rgb_score_mean": paper_rgb[0], "paper_rgb_score_std": paper_rgb[1],
                "episodes": _joined(r.episodes for r in done),
                **{key: _joined(p.get(key) for p in provenance)
                   for key in ("manifest_sha256", "hub_commit", "code_version", "config_hash",
                               "preset", "device")},
                "wall_seconds": (sum(p.get("wall_seconds") or 0.0 for p in provenance)
                                 if provenance else None),
            })
    return rows


def score_sets(grid, records):
    """``(datasets, {method: [per-dataset arrays of seed scores]})`` for the aggregate statistics,
    over the datasets on which every method has at least one finished run (the others cannot be
    compared and are left out)."""
    by_cell = {}
    for record in records:
        if record.status == "finished":
            by_cell.setdefault((record.method, record.dataset), []).append(record.normalized_score)
    common = [dataset for dataset in grid.datasets
              if all((method, dataset) in by_cell for method in grid.methods)]
    return common, {method: [np.array(by_cell[(method, dataset)]) for dataset in common]
                    for method in grid.methods}


def record_dicts(records):
    """JSON-able dicts of :class:`RunRecord` s."""
    return [asdict(record) for record in records]
