"""``report.html``: the leaderboard's tables and figures in one self-contained page.

No network access and no companion files: the style sheet is inline and the figures are embedded
as base64 PNG data, so the file can be mailed, attached to an issue or opened offline.
"""

import base64
import html
from pathlib import Path

from .tables import (
    IMPROVEMENT_NOTE, aggregate_lines, failed_runs, improvement_lines, provenance_lines,
    statistics_note, summary_line, table_cells,
)

STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.8em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
p.summary { color: #444; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
td.best { font-weight: bold; } span.paper { color: #777; font-size: 0.9em; }
div.scroll { overflow-x: auto; } figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; } .failed { color: #a00; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""

CAPTIONS = {
    "scores_per_dataset.png": "Normalized score per dataset (mean ± std over seeds); black "
                              "diamonds: the paper's Table 1.",
    "aggregates.png": "Aggregate metrics with 95% stratified-bootstrap intervals.",
    "probability_of_improvement.png": "Probability that a run of X beats a run of Y on a dataset.",
    "performance_profiles.png": "Performance profiles: fraction of runs above each score.",
}


def _e(text):
    return html.escape(str(text))


def _table(header, rows, bold=None):
    head = "".join(f"<th>{_e(cell)}</th>" for cell in header)
    body = []
    for index, row in enumerate(rows):
        cells = []
        for column, cell in enumerate(row):
            css = ' class="best"' if bold and (index, column) in bold else ""
            cells.append(f"<td{css}>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _matrix(results, key, digits):
    """A Table-1-like matrix, the paper's value in grey, the best mean per dataset in bold."""
    methods, lines = table_cells(results, key, digits)
    by_cell = {(row["dataset"], row["method"]): row for row in results["rows"]}
    rows, bold = [], set()
    for index, (dataset, cells) in enumerate(lines):
        means = [by_cell[(dataset, method)][f"{key}_mean"] for method in methods]
        known = [mean for mean in means if mean is not None]
        best = max(known) if len(known) > 1 else None
        row = [_e(dataset)]
        for column, (cell, mean) in enumerate(zip(cells, means), start=1):
            ours, _, paper = cell.partition(" [")
            text = _e(ours) + (f'<br><span class="paper">paper {_e(paper[:-1])}</span>'
                               if paper else "")
            row.append(text)
            if best is not None and mean == best:
                bold.add((index, column))
        rows.append(row)
    return _table(["dataset", *methods], rows, bold)


def _figure(name, path):
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_e(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(CAPTIONS.get(name, name))}</figcaption></figure>")


def report_html(results, images):
    """The text of ``report.html`` for the results dict and ``{name: png path}`` figures."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>LQV-D4RL leaderboard</title>", f"<style>{STYLE}</style></head><body>",
             "<h1>LQV-D4RL leaderboard</h1>",
             f'<p class="summary">{_e(summary_line(results).replace("`", ""))}.</p>']
    parts += ["<h2>Normalized score (the paper's Table 1)</h2>",
              "<p>Mean ± std over seeds (episodes averaged within a seed first), the paper's "
              "Table 1 value below it; the best mean per dataset in bold.</p>",
              _matrix(results, "score", 2)]
    if "scores_per_dataset.png" in images:
        parts.append(_figure("scores_per_dataset.png", images["scores_per_dataset.png"]))
    parts += ["<h2>Raw return (the paper's Table 5)</h2>", _matrix(results, "return", 1)]
    if any(row["rgb_score_mean"] is not None for row in results["rows"]):
        parts += ["<h2>Colour backgrounds (the paper's Table 2)</h2>",
                  _matrix(results, "rgb_score", 2)]
    parts += ["<h2>Aggregates over datasets</h2>", f"<p>{_e(statistics_note(results))}</p>"]
    header, rows = aggregate_lines(results)
    if rows:
        parts.append(_table(header, [[_e(cell) for cell in row] for row in rows]))
    for name in ("aggregates.png", "performance_profiles.png"):
        if name in images:
            parts.append(_figure(name, images[name]))
    header, rows = improvement_lines(results)
    if rows:
        parts += ["<h2>Probability of improvement</h2>", f"<p>{_e(IMPROVEMENT_NOTE)}</p>",
                  _table(header, [[_e(cell) for cell in row] for row in rows])]
        if "probability_of_improvement.png" in images:
            parts.append(_figure("probability_of_improvement.png",
                                 images["probability_of_improvement.png"]))
    header, rows = provenance_lines(results)
    parts += ["<h2>Runs and provenance</h2>",
              _table(header, [[_e(cell) for cell in row] for row in rows])]
    failures = failed_runs(results)
    if failures:
        parts += ["<h2>Failed runs</h2>", "<ul>"]
        parts += [f'<li class="failed">{_e(label)} (<code>{_e(folder)}/error.json</code>): '
                  f"{_e(message)}</li>" for label, folder, message in failures]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
