"""Return statistics of datasets, laid out like Table 3 of the SeMOPO paper.

``return_statistics`` turns a list of episodic returns into the numbers of one Table 3 row;
``format_statistics_table`` prints several such rows (ours next to the paper's) as a plain-text
table. ``summarize_policies`` and ``format_policy_summary`` do the same for the behaviour policies
behind a dataset. The ``info`` command uses them; so can anything that writes datasets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

STATISTIC_KEYS = ("episodes", "mean", "std", "min", "p25", "median", "p75", "max")
"""The columns of the paper's Table 3, in its order."""


def return_statistics(returns) -> dict:
    """Summarize episodic returns as one Table-3 row.

    Returns a dict with ``episodes`` (int) and ``mean``, ``std`` (population, ddof=0), ``min``,
    ``p25``, ``median``, ``p75``, ``max`` as plain floats (numpy's linear percentiles). With no
    returns at all, every value but ``episodes`` is ``None``.
    """
    values = np.asarray(returns, dtype=np.float64).reshape(-1)
    if values.size == 0:
        return {key: (0 if key == "episodes" else None) for key in STATISTIC_KEYS}
    p25, median, p75 = np.percentile(values, [25, 50, 75])
    return {
        "episodes": int(values.size),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "p25": float(p25),
        "median": float(median),
        "p75": float(p75),
        "max": float(values.max()),
    }


def format_statistics_table(rows: Sequence[tuple[str, Mapping]], *, decimals: int = 1) -> str:
    """Lay out ``(label, statistics)`` rows as an aligned text table with Table 3's columns.

    ``statistics`` is a mapping like the one :func:`return_statistics` returns; missing or ``None``
    values print as ``-``.
    """
    header = ["", *STATISTIC_KEYS]
    lines = [header]
    for label, statistics in rows:
        cells = [str(label)]
        for key in STATISTIC_KEYS:
            cells.append(_format_cell(statistics.get(key), decimals, is_count=key == "episodes"))
        lines.append(cells)
    return _align(lines)


def band_report(statistics: Mapping, paper: Mapping) -> str:
    """Where a generated level lies against the paper's Table 3 row: which of its mean, median and
    min/max fall outside the paper's [min, max] band of episodic returns (``"in band"`` when none
    does)."""
    low, high = paper["min"], paper["max"]
    outside = [f"{key} {statistics[key]:.1f}" for key in ("mean", "median", "min", "max")
               if statistics.get(key) is not None and not low <= statistics[key] <= high]
    if not outside:
        return "in band"
    return f"outside the paper's [{low:g}, {high:g}]: " + ", ".join(outside)


def markdown_statistics_table(rows: Sequence[tuple[str, Mapping]], *, decimals: int = 1) -> str:
    """``(label, statistics)`` rows as a Markdown table with Table 3's columns (DATASETS.md)."""
    lines = ["| dataset | " + " | ".join(STATISTIC_KEYS) + " |",
             "|---|" + "---:|" * len(STATISTIC_KEYS)]
    for label, statistics in rows:
        cells = [_format_cell(statistics.get(key), decimals, is_count=key == "episodes")
                 for key in STATISTIC_KEYS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarize_policies(policy_ids, returns, policy_steps=None) -> list[dict]:
    """Group episodes by behaviour policy, in order of first appearance.

    Returns one dict per policy: ``policy_id``, ``episodes``, ``mean_return`` and ``policy_step``
    (the checkpoint step of the policy's first episode, -1 when unknown or not applicable).
    """
    policy_ids = np.asarray(policy_ids).astype(str)
    returns = np.asarray(returns, dtype=np.float64)
    if policy_steps is None:
        policy_steps = np.full(len(policy_ids), -1, dtype=np.int64)
    policy_steps = np.asarray(policy_steps, dtype=np.int64)
    summaries = []
    for policy_id in dict.fromkeys(policy_ids.tolist()):
        mask = policy_ids == policy_id
        summaries.append(
            {
                "policy_id": policy_id,
                "episodes": int(mask.sum()),
                "mean_return": float(returns[mask].mean()),
                "policy_step": int(policy_steps[mask][0]),
            }
        )
    return summaries


def format_policy_summary(summaries: Sequence[Mapping], *, max_rows: int = 12) -> str:
    """Lay out :func:`summarize_policies` output as a table.

    When there are more than ``max_rows`` policies, the first and last few are shown with one line
    in between that counts the ones left out.
    """
    lines = [["policy", "step", "episodes", "mean return"]]
    shown = list(summaries)
    left_out = 0
    if len(shown) > max_rows:
        head = max_rows // 2
        tail = max_rows - head
        left_out = len(shown) - max_rows
        shown = shown[:head] + [None] + shown[-tail:]
    for summary in shown:
        if summary is None:
            lines.append([f"... {left_out} more policies ...", "", "", ""])
            continue
        step = summary.get("policy_step", -1)
        lines.append(
            [
                str(summary["policy_id"]),
                "-" if step is None or step < 0 else str(step),
                str(summary["episodes"]),
                _format_cell(summary["mean_return"], 1, is_count=False),
            ]
        )
    return _align(lines)


def format_bytes(num_bytes: float) -> str:
    """Human-readable size with binary units, e.g. ``1.2 GiB``."""
    if abs(num_bytes) < 1024:
        return f"{int(num_bytes)} B"
    value = num_bytes / 1024
    for unit in ("KiB", "MiB"):
        if abs(value) < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _format_cell(value, decimals: int, *, is_count: bool) -> str:
    if value is None:
        return "-"
    if is_count:
        return str(int(value))
    return f"{float(value):.{decimals}f}"


def _align(lines: list[list[str]]) -> str:
    """Left-align the first column, right-align the others, two spaces between columns."""
    widths = [max(len(line[column]) for line in lines) for column in range(len(lines[0]))]
    rendered = []
    for line in lines:
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:])]
        rendered.append("  ".join(cells).rstrip())
    return "\n".join(rendered)
