"""How long a training run would take on a CPU, projected from per-update times measured on one.

``lqv-d4rl train`` and ``lqv-d4rl leaderboard`` print this projection before a run on a machine
without CUDA (or with ``--device cpu``), and ask before starting one that is projected to take more
than :data:`LONG_CPU_RUN_SECONDS`: ``--preset paper`` of any algorithm (days to weeks on a CPU) must
not start silently. The figures are not timed on the user's machine (timing a few paper-size
updates takes minutes there); they are the table :data:`SECONDS_PER_UPDATE`, measured with::

    python benchmarks/bench_gpu.py --device cpu --threads 1 --precisions float32 --compile off \\
        --warmup 1 --steps 2 --episodes 10           # paper presets (lompo: --episodes 110)
    python benchmarks/bench_gpu.py --device cpu --threads 1 --precisions float32 --compile off \\
        --quick                                      # smoke presets

on the machine :data:`MEASURED_ON` describes (each phase: the mean of the timed updates, data
loading included; evaluation, checkpoints and start-up not included). That machine was shared
with other jobs, so the figures are upper bounds for it; another CPU differs by its speed and
threads. A preset that was not measured uses the ``paper`` figures (every preset but ``smoke`` has
the paper's network sizes) with its own number of updates; ``--set`` changes of network or batch
sizes are not reflected.
"""

import math
from dataclasses import dataclass

LONG_CPU_RUN_SECONDS = 3600
"""A run projected to take longer than this on a CPU is started only when the user confirms it."""

MEASURED_ON = ("a shared 2-core x86_64 CPU (load average 5-7), one torch thread, float32, "
               "2026-12-06")
"""Where :data:`SECONDS_PER_UPDATE` was measured."""

PHASES = {
    "semopo": (("model", "model_steps"), ("policy", "policy_steps")),
    "offline_dv2": (("model", "model_steps"), ("policy", "policy_steps")),
    "lompo": (("model", "model_steps"), ("imagine", "prefill_rounds"), ("policy", "policy_steps")),
    "bc": (("train", "updates"),),
    "drq_bc": (("train", "updates"),),
    "drq_cql": (("train", "updates"),),
    "infogating": (("train", "updates"),),
}
"""Each algorithm's training phases in order: ``(phase name, config field of its update count)``."""

SECONDS_PER_UPDATE = {
    "semopo": {"paper": {"model": 146.5, "policy": 56.7},
               "smoke": {"model": 0.58, "policy": 0.073}},
    "offline_dv2": {"paper": {"model": 75.7, "policy": 23.5},
                    "smoke": {"model": 0.18, "policy": 0.067}},
    "lompo": {"paper": {"model": 29.8, "imagine": 5.3, "policy": 0.092},
              "smoke": {"model": 0.16, "imagine": 0.035, "policy": 0.0069}},
    "bc": {"paper": {"train": 1.55}, "smoke": {"train": 0.022}},
    "drq_bc": {"paper": {"train": 1.71}, "smoke": {"train": 0.023}},
    "drq_cql": {"paper": {"train": 5.34}, "smoke": {"train": 0.036}},
    "infogating": {"paper": {"train": 30.5}, "smoke": {"train": 0.16}},
}
"""Measured seconds per update: ``{algorithm: {preset: {phase: seconds}}}`` (see the module
docstring for how)."""


@dataclass(frozen=True)
class Projection:
    """The projected CPU time of one training run (see :func:`project_run`)."""

    algorithm: str
    preset: str
    seconds: float
    phases: tuple
    """``(phase, updates, seconds per update)`` of every phase, in order."""
    figures_of: str
    """The preset whose measured figures were used (``paper`` for an unmeasured preset)."""

    @property
    def is_long(self) -> bool:
        """Longer than :data:`LONG_CPU_RUN_SECONDS`."""
        return self.seconds > LONG_CPU_RUN_SECONDS

    def updates_text(self) -> str:
        """E.g. ``25,000 model + 100,000 policy updates``."""
        parts = [f"{updates:,} {phase}" for phase, updates, _ in self.phases if updates]
        return " + ".join(parts) + " updates" if parts else "no updates"

    def describe(self) -> str:
        """One sentence: what the run is, how long it would take on a CPU, and where the figure
        comes from."""
        borrowed = (f" (the {self.figures_of} preset's per-update times)"
                    if self.figures_of != self.preset else "")
        return (f"{self.algorithm} --preset {self.preset} on a CPU: {self.updates_text()}, "
                f"projected {format_duration(self.seconds)} of training{borrowed}, from "
                f"per-update times measured on {MEASURED_ON} (table in lqv_d4rl/cpu_cost.py; "
                "evaluation not included)")


def project_run(algorithm: str, config, preset: str, stop_after=None) -> Projection | None:
    """The projected CPU time of training ``algorithm`` with ``config`` (made from ``preset``),
    stopping after ``stop_after`` updates if given; None for an algorithm without measured
    figures (e.g. one registered by another package)."""
    figures = SECONDS_PER_UPDATE.get(algorithm, {})
    figures_of = preset if preset in figures else "paper"
    per_phase = figures.get(figures_of) or {}
    phases_known = algorithm in PHASES and all(per_phase.get(phase) is not None
                                               for phase, _ in PHASES[algorithm])
    if not phases_known:
        return None
    left = math.inf if stop_after is None else int(stop_after)
    phases, seconds = [], 0.0
    for phase, field in PHASES[algorithm]:
        updates = int(min(getattr(config, field, 0) or 0, left))
        left -= updates
        phases.append((phase, updates, per_phase[phase]))
        seconds += updates * per_phase[phase]
    return Projection(algorithm, preset, seconds, tuple(phases), figures_of)


def format_duration(seconds: float) -> str:
    """E.g. ``45 s``, ``12 min``, ``3.4 h``, ``9.2 days``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


__all__ = ["LONG_CPU_RUN_SECONDS", "MEASURED_ON", "Projection", "SECONDS_PER_UPDATE",
           "format_duration", "project_run"]
