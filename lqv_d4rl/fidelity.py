"""How faithful a dataset is to the paper's Table 3: each statistic of its returns against a tolerance.

A generated level reproduces LQV-D4RL when its episodic returns look like the published ones. The
checks, per level (``TOLERANCES``):

* ``random``: the paper's episode count (200); mean and p75 within +-30 % of Table 3's; max within
  +-40 % (one episode decides it).
* ``medrep``: 400 episodes; mean and median within +-30 % (the paper's medrep is dominated by
  early, low-return episodes).
* ``medium``: 200 episodes; at least 90 % of them inside the paper's [min, max] band (a snapshot
  above the band is no more medium than one below it); mean within +-10 %.

A relative tolerance of a statistic near zero would demand exactness (hopper_hop's random p75 is
0.1, its medrep median 0.0), so every allowed deviation is at least ``ABSOLUTE_FLOOR`` (2 %) of the
task's normalization range (Table 3's S_max - S_min; 1.7 return for hopper_hop).

``fidelity_verdicts(task, level, returns)`` gives one :class:`Verdict` per check;
``format_verdicts`` lays them out as a table a person can read ("pass" or how far off).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .paper import PAPER_REFERENCES
from .registry import get_recipe
from .stats import return_statistics

ABSOLUTE_FLOOR = 0.02
"""Smallest allowed deviation, as a share of the task's Table 3 normalization range."""

IN_BAND_SHARE = 0.9
"""Share of a medium level's episodes that must lie inside the paper's [min, max] band."""

TOLERANCES = {
    "random": {"episodes": 0.0, "mean": 0.30, "p75": 0.30, "max": 0.40},
    "medrep": {"episodes": 0.0, "mean": 0.30, "median": 0.30},
    "medium": {"episodes": 0.0, "in_band": None, "mean": 0.10},
}
"""Level -> statistic -> relative tolerance (0.0 for episode counts: exact; ``in_band``: a share)."""


@dataclass(frozen=True)
class Verdict:
    """One statistic of a dataset against the paper's value and its allowed interval."""

    statistic: str
    value: float
    paper: float
    low: float
    high: float

    def to_dict(self) -> dict:
        """A JSON-able dict: the fields, ``passed`` and ``verdict`` (:meth:`describe`)."""
        return {"statistic": self.statistic, "value": self.value, "paper": self.paper,
                "low": self.low, "high": self.high, "passed": self.passed,
                "verdict": self.describe()}

    @classmethod
    def from_dict(cls, values) -> "Verdict":
        """The verdict of a :meth:`to_dict` dict."""
        return cls(values["statistic"], values["value"], values["paper"], values["low"],
                   values["high"])

    @property
    def passed(self) -> bool:
        """True when ``low <= value <= high``."""
        return bool(self.low <= self.value <= self.high)

    def describe(self) -> str:
        """``"pass"``, or how far outside its interval the value lies."""
        if self.passed:
            return "pass"
        if self.statistic == "in_band":
            return f"FAIL: {self.value:.0%} in band, needs {self.low:.0%}"
        if self.statistic == "episodes":
            return f"FAIL: {int(self.value)} episodes, the paper has {int(self.paper)}"
        bound = self.low if self.value < self.low else self.high
        side = "below" if self.value < self.low else "above"
        return f"FAIL: {abs(self.value - bound):.1f} {side} the allowed {self.low:.1f}..{self.high:.1f}"


def allowed_interval(task: str, paper_value: float, tolerance: float) -> tuple[float, float]:
    """``paper_value`` +- max(tolerance * |paper_value|, ABSOLUTE_FLOOR * normalization range)."""
    s_min, s_max = PAPER_REFERENCES[task]
    slack = max(tolerance * abs(paper_value), ABSOLUTE_FLOOR * (s_max - s_min))
    return paper_value - slack, paper_value + slack


def share_in_band(returns, band) -> float:
    """Share of ``returns`` inside ``[band[0], band[1]]``."""
    values = np.asarray(returns, dtype=np.float64)
    return float(np.mean((values >= band[0]) & (values <= band[1]))) if values.size else 0.0


def fidelity_verdicts(task: str, level: str, returns) -> list[Verdict]:
    """The checks of ``level`` (see the module docstring) for a dataset of ``task`` with these
    episodic returns, against the paper's Table 3."""
    recipe = get_recipe(f"{task}-{level}")
    paper = recipe.paper_returns
    statistics = return_statistics(returns)
    verdicts = []
    for statistic, tolerance in TOLERANCES[level].items():
        if statistic == "episodes":
            count = recipe.episodes
            verdicts.append(Verdict("episodes", statistics["episodes"], count, count, count))
        elif statistic == "in_band":
            share = share_in_band(returns, (paper["min"], paper["max"]))
            verdicts.append(Verdict("in_band", share, 1.0, IN_BAND_SHARE, 1.0))
        elif statistics[statistic] is not None:
            low, high = allowed_interval(task, paper[statistic], tolerance)
            verdicts.append(Verdict(statistic, statistics[statistic], paper[statistic], low, high))
    return verdicts


def all_passed(verdicts) -> bool:
    """True when every verdict passed."""
    return all(verdict.passed for verdict in verdicts)


def format_verdicts(rows) -> str:
    """``(dataset label, verdicts)`` rows as an aligned text table: statistic, ours, paper,
    allowed interval, verdict."""
    lines = [["dataset", "statistic", "ours", "paper", "allowed", "verdict"]]
    for label, verdicts in rows:
        for verdict in verdicts:
            lines.append([label, verdict.statistic, _value(verdict, verdict.value),
                          _value(verdict, verdict.paper), _interval(verdict), verdict.describe()])
    widths = [max(len(line[column]) for line in lines) for column in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in lines)


def _value(verdict, value) -> str:
    if verdict.statistic == "in_band":
        return f"{value:.0%}"
    if verdict.statistic == "episodes":
        return str(int(value))
    return f"{value:.1f}"


def _interval(verdict) -> str:
    if verdict.statistic == "in_band":
        return f">= {verdict.low:.0%}"
    if verdict.statistic == "episodes":
        return str(int(verdict.low))
    return f"{verdict.low:.1f}..{verdict.high:.1f}"
