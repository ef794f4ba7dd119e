"""Ask before a long run on a CPU: ``train`` and ``leaderboard`` with a paper-size preset on a
machine without CUDA print the projected time (:mod:`lqv_d4rl.cpu_cost`) and start only when the
user confirms on a terminal, or when :data:`ALLOW_FLAG` is given (scripts, batch jobs)."""

import sys

import click

ALLOW_FLAG = "--allow-long-cpu-run"
"""The flag that starts a run projected to take long on a CPU without asking."""
ALLOW_HELP = ("Start a run (or grid) projected to take more than an hour on a CPU without asking "
              "(e.g. --preset paper on a machine without CUDA); needed where no terminal can "
              "answer the question.")


def is_interactive() -> bool:
    """Whether a person can answer a yes/no question: stdin and stderr are terminals."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def confirm_long_cpu_run(description: str, seconds: float, *, allowed: bool) -> None:
    """Print ``description`` (what would run and its projected time) when ``seconds`` is over
    :data:`lqv_d4rl.cpu_cost.LONG_CPU_RUN_SECONDS`, then go on only if ``allowed``, or if the
    user says yes (default no) on a terminal; otherwise exit with a message saying what to do."""
    from ..cpu_cost import LONG_CPU_RUN_SECONDS, format_duration

    if seconds <= LONG_CPU_RUN_SECONDS:
        return
    click.echo(description, err=True)
    if allowed:
        click.echo(f"starting it anyway ({ALLOW_FLAG})", err=True)
        return
    alternatives = ("run it on a machine with a CUDA GPU (--device cuda), or try --preset smoke "
                    "(minutes on a CPU) first")
    if not is_interactive():
        raise click.ClickException(
            f"not started: it is projected to take {format_duration(seconds)} on this CPU (a "
            f"paper-size run is a GPU job). Pass {ALLOW_FLAG} to start it anyway, "
            f"{alternatives}.")
    if not click.confirm("Start it on this CPU anyway?", default=False, err=True):
        click.echo(f"not started; {alternatives}", err=True)
        raise click.exceptions.Exit(1)
