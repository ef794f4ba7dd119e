"""The leaderboard's tables as text: ``leaderboard.md``, ``leaderboard.csv``, and the rows and
cells that ``report.html`` (:mod:`.html`) lays out the same way.

Every function takes the results dict of :func:`.report.build_results`.
"""

import csv
import io

from .stats import AGGREGATE_NAMES, AGGREGATES

CSV_COLUMNS = (
    "dataset", "task", "level", "method", "finished", "failed", "unfinished", "seeds",
    "score_mean", "score_std", "paper_score_mean", "paper_score_std",
    "return_mean", "return_std", "paper_return_mean", "paper_return_std",
    "rgb_score_mean", "rgb_score_std", "paper_rgb_score_mean", "paper_rgb_score_std",
    "episodes", "manifest_sha256", "hub_commit", "code_version", "config_hash", "preset",
    "device", "wall_seconds",
)


def mean_std(mean, std, digits=2):
    """``mean ± std`` (an en dash for none)."""
    return "–" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def interval(entry, digits=2):
    """``value [low, high]`` of a statistic with its confidence interval."""
    return (f"{entry['value']:.{digits}f} [{entry['low']:.{digits}f}, "
            f"{entry['high']:.{digits}f}]")


def table_cells(results, key, digits=2):
    """``(methods, [(dataset, [cell text per method])])`` of a Table-1-like matrix: ours ± std with
    the paper's value in brackets; ``key`` is ``score``, ``return`` or ``rgb_score``."""
    grid = results["grid"]
    by_cell = {(row["dataset"], row["method"]): row for row in results["rows"]}
    lines = []
    for dataset in grid["datasets"]:
        cells = []
        for method in grid["methods"]:
            row = by_cell[(dataset, method)]
            text = mean_std(row[f"{key}_mean"], row[f"{key}_std"], digits)
            if row[f"paper_{key}_mean"] is not None:
                text += f" [{mean_std(row[f'paper_{key}_mean'], row[f'paper_{key}_std'], digits)}]"
            cells.append(text)
        lines.append((dataset, cells))
    return grid["methods"], lines


def aggregate_lines(results):
    """``(header, rows)`` of the aggregates table (value [95% CI] per metric)."""
    header = ["method", *(AGGREGATE_NAMES[name] for name in AGGREGATES)]
    rows = [[method, *(interval(values[name]) for name in AGGREGATES)]
            for method, values in results["statistics"].get("aggregates", {}).items()]
    return header, rows


IMPROVEMENT_NOTE = ("P(row > column): the probability that a run of the row's method beats a run "
                    "of the column's method on a dataset (ties count half), averaged over the "
                    "datasets, with its 95% stratified-bootstrap interval.")


def improvement_lines(results):
    """``(header, rows)`` of the probability-of-improvement matrix: row X, column Y, P(X > Y)
    [95% CI]; empty without at least two methods."""
    improvement = results["statistics"].get("improvement", {})
    methods = list(results["statistics"].get("aggregates", {}))
    if not improvement:
        return [], []
    rows = [[x, *("–" if x == y else interval(improvement[f"{x}>{y}"]) for y in methods)]
            for x in methods]
    return ["P(row > column)", *methods], rows


def provenance_lines(results):
    """``(header, rows)``: per dataset and method, runs and where they came from."""
    header = ["dataset", "method", "seeds", "failed", "episodes", "manifest sha256", "Hub commit",
              "version", "config hash", "device", "wall time"]
    rows = []
    for row in results["rows"]:
        rows.append([row["dataset"], row["method"], ", ".join(map(str, row["seeds"])) or "–",
                     str(row["failed"]), row["episodes"] or "–", _short(row["manifest_sha256"]),
                     _short(row["hub_commit"]), row["code_version"] or "–",
                     row["config_hash"] or "–", row["device"] or "–",
                     "–" if row["wall_seconds"] is None else _duration(row["wall_seconds"])])
    return header, rows


def failed_runs(results):
    """``[(label, folder, message)]`` of the runs that failed."""
    return [(f"{run['method']} {run['dataset']} seed{run['seed']}",
             f"runs/{run['method']}/{run['dataset']}/seed{run['seed']}", run["error"])
            for run in results["runs"] if run["status"] == "failed"]


def _short(text, size=12):
    if not text:
        return "–"
    return ";".join(part[:size] for part in str(text).split(";"))


def _duration(seconds):
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def summary_line(results):
    """One line: preset, grid size, reference, runs finished."""
    grid, counts = results["grid"], results["counts"]
    total = sum(counts.values())
    failed = f", {counts['failed']} failed" if counts["failed"] else ""
    todo = counts["unfinished"] + counts["missing"]
    todo = f", {todo} not finished" if todo else ""
    return (f"preset `{grid['preset']}`: {len(grid['methods'])} method(s) x "
            f"{len(grid['datasets'])} dataset(s) x {len(grid['seeds'])} seed(s); "
            f"{counts['finished']}/{total} runs finished{failed}{todo}; scores normalized with "
            f"the `{grid['reference']}` reference")


def statistics_note(results):
    """How the aggregates were computed (datasets, bootstrap, seed)."""
    stats_ = results["statistics"]
    if not stats_["datasets"]:
        return "No dataset has a finished run of every method yet: no aggregates."
    left_out = (f" Left out (not every method has a finished run): {', '.join(stats_['left_out'])}."
                if stats_["left_out"] else "")
    return (f"Over {len(stats_['datasets'])} dataset(s) ({', '.join(stats_['datasets'])}), "
            "seeds as runs; 95% stratified-bootstrap percentile intervals "
            f"({stats_['reps']['aggregate']} replicates for aggregates, "
            f"{stats_['reps']['improvement']} for probability of improvement, "
            f"{stats_['reps']['profile']} for profiles; bootstrap seed {stats_['seed']}), as "
            f"rliable defines them.{left_out}")


def _md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(results):
    """The text of ``leaderboard.md``."""
    parts = ["# LQV-D4RL leaderboard", "", summary_line(results) + ".", ""]
    methods, lines = table_cells(results, "score")
    parts += ["## Normalized score (the paper's Table 1)", "",
              "Mean ± std over seeds of the normalized score (episodes averaged within a seed "
              "first); the paper's Table 1 value in brackets.", "",
              _md_table(["dataset", *methods], [[d, *cells] for d, cells in lines]), ""]
    methods, lines = table_cells(results, "return", digits=1)
    parts += ["## Raw return (the paper's Table 5)", "",
              _md_table(["dataset", *methods], [[d, *cells] for d, cells in lines]), ""]
    if any(row["rgb_score_mean"] is not None for row in results["rows"]):
        methods, lines = table_cells(results, "rgb_score")
        parts += ["## Colour backgrounds (the paper's Table 2)", "",
                  _md_table(["dataset", *methods], [[d, *cells] for d, cells in lines]), ""]
    parts += ["## Aggregates over datasets", "", statistics_note(results), ""]
    header, rows = aggregate_lines(results)
    if rows:
        parts += [_md_table(header, rows), ""]
    header, rows = improvement_lines(results)
    if rows:
        parts += ["## Probability of improvement", "", IMPROVEMENT_NOTE, "",
                  _md_table(header, rows), ""]
    header, rows = provenance_lines(results)
    parts += ["## Runs and provenance", "", _md_table(header, rows), ""]
    failures = failed_runs(results)
    if failures:
        parts += ["## Failed runs", ""]
        parts += [f"- {label} (`{folder}/error.json`): {message}"
                  for label, folder, message in failures]
        parts += [""]
    return "\n".join(parts)


def csv_text(rows):
    """The text of ``leaderboard.csv``: :data:`CSV_COLUMNS`, one row per dataset and method."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_value(row.get(key)) for key in CSV_COLUMNS})
    return buffer.getvalue()


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(map(str, value))
    if isinstance(value, float):
        return f"{value:.6g}"
    return value
