"""The leaderboard's outputs: ``leaderboard.md``, ``.csv``, ``.json``, figures and ``report.html``.

:func:`write_leaderboard` reads the run folders of a grid (:mod:`.results`), computes the aggregate
statistics (:mod:`.stats`) and writes, in ``out``:

* ``leaderboard.md``: the normalized-score table next to the paper's Table 1, the raw-return table
  next to Table 5 (and Table 2 for colour backgrounds when evaluated), aggregates with confidence
  intervals, probability of improvement, run counts with provenance, and failed runs;
* ``leaderboard.csv``: one row per dataset and method, every number and the provenance;
* ``leaderboard.json``: the grid, those rows, every run (with provenance), the statistics;
* ``figures/*.png`` (:mod:`.figures`) and a self-contained ``report.html`` (:mod:`.html`).

Every file is written atomically (a temporary file renamed into place), so a killed leaderboard
never leaves a half-written table.
"""

import json
import os
from pathlib import Path

from .. import __version__
from .results import STATUSES, cell_rows, read_runs, record_dicts, score_sets
from .stats import summarize
from .tables import csv_text, markdown

FORMAT = "lqv-d4rl-leaderboard"
TABLE_NAMES = ("leaderboard.md", "leaderboard.csv", "leaderboard.json")


def build_results(grid, out, *, stats_seed=0, reps=None):
    """Everything the outputs show, as one JSON-able dict (read from the run folders in ``out``)."""
    records = read_runs(grid, out)
    rows = cell_rows(grid, records)
    common, score_dict = score_sets(grid, records)
    summary = summarize(score_dict, seed=stats_seed, reps=reps) if common else None
    return {
        "format": FORMAT, "code_version": __version__, "grid": grid.to_dict(),
        "counts": {status: sum(r.status == status for r in records) for status in STATUSES},
        "rows": rows,
        "statistics": {"datasets": common,
                       "left_out": [d for d in grid.datasets if d not in common],
                       **(summary or {})},
        "runs": record_dicts(records),
    }


def write_leaderboard(grid, out, *, stats_seed=0, reps=None, figures=True):
    """Write the tables, figures and report of ``grid`` from the run folders in ``out``; returns
    ``{name: path}`` of what was written."""
    out = Path(out)
    results = build_results(grid, out, stats_seed=stats_seed, reps=reps)
    written = {
        "leaderboard.md": _write(out / "leaderboard.md", markdown(results)),
        "leaderboard.csv": _write(out / "leaderboard.csv", csv_text(results["rows"])),
        "leaderboard.json": _write(out / "leaderboard.json", json.dumps(results, indent=2) + "\n"),
    }
    images = {}
    if figures:
        from .figures import write_figures

        images = write_figures(results, out / "figures")
        written.update({f"figures/{name}": path for name, path in images.items()})
    from .html import report_html

    written["report.html"] = _write(out / "report.html", report_html(results, images))
    return written


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
