"""Did-you-mean hints for mistyped task names and dataset ids, and the exit code of each error.

``walker-walk``, ``Walker_Walk`` and ``walker_walk_medrep`` are not benchmark ids, so the library
takes them for custom dataset names and only says that no such dataset exists; these helpers add
the benchmark name the user most likely meant (never the name that was typed).

Exit codes: 2 for a usage error (a name or option that cannot be right, whatever is on disk:
:data:`USAGE_ERRORS`, and click's own), 1 for everything else (:func:`cli_error`), 130 for
``generate``, ``rerender`` and ``leaderboard`` stopped with Ctrl-C, which say how to resume
(:func:`resume_hint_on_interrupt`).
"""

import contextlib
import difflib
import os

import click

from ..errors import DatasetNotFoundError, LQVError, UnknownDatasetError, UnknownTaskError
from ..registry import normalized_name as _normalized

USAGE_ERRORS = (UnknownDatasetError, UnknownTaskError)
"""The toolkit's errors that mean the command line itself is wrong (exit code 2)."""


def cli_error(err: LQVError, names=()) -> click.ClickException:
    """The click exception that reports ``err``: a usage error (exit 2) for :data:`USAGE_ERRORS`,
    a plain one (exit 1) otherwise; a DatasetNotFoundError gets a did-you-mean for ``names``."""
    if isinstance(err, DatasetNotFoundError):
        return not_found_error(err, names)
    if isinstance(err, USAGE_ERRORS):
        return click.UsageError(str(err), click.get_current_context(silent=True))
    return click.ClickException(str(err))


@contextlib.contextmanager
def resume_hint_on_interrupt(kept: str):
    """Ctrl-C ends the command with one line on stderr, ``interrupted: {kept}; run the same
    command again to continue``, and exit code 130 (128 + SIGINT), instead of a traceback or
    click's bare ``Aborted!``."""
    try:
        yield
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: {kept}; run the same command again to continue", err=True)
        raise SystemExit(130) from None


def kept_by_generate(root) -> str:
    """What an interrupted ``generate`` (or ``benchmarks/datasets.py``) keeps, for
    :func:`resume_hint_on_interrupt`."""
    from ..registry import dataset_root

    return f"finished datasets and the training checkpoint are kept in {dataset_root(root)}"


def task_hint(name: str, levels_option: bool = False) -> str:
    """`` Did you mean ...?`` for a mistyped task, or the task of a dataset id (and, where the
    command has ``--levels``, how to make only that level)."""
    from ..tasks import LEVELS, TASKS

    head, _, level = str(name).rpartition("-")
    if _normalized(head) in TASKS and level in LEVELS:
        how = f" (add --levels {level} to make only that level)" if levels_option else ""
        return f" {name!r} is a dataset id; its task is {_normalized(head)!r}{how}."
    others = [task for task in TASKS if task != name]
    close = difflib.get_close_matches(_normalized(name), others, n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def dataset_hint(name: str) -> str:
    """`` Did you mean ...?`` naming the benchmark ids close to ``name`` ('' when none is)."""
    from ..registry import DATASET_IDS
    from ..tasks import TASKS

    if os.sep in str(name) or name in DATASET_IDS:
        return ""  # a path, or the right id of a dataset that is just not there
    key = _normalized(name)
    if key in TASKS:
        ids = ", ".join(repr(f"{key}-{level}") for level in ("random", "medrep", "medium"))
        what = "is a task" if key == name else f"looks like the task {key!r}"
        return f" {name!r} {what}; its datasets are {ids}."
    by_key = {_normalized(dataset_id): dataset_id for dataset_id in DATASET_IDS}
    if key in by_key:  # only case or dashes differ: that is the one
        return f" Did you mean {by_key[key]!r}?"
    close = difflib.get_close_matches(key, list(by_key), n=3, cutoff=0.75)
    if not close:
        return ""
    return f" Did you mean {' or '.join(repr(by_key[match]) for match in close)}?"


def not_found_error(err: DatasetNotFoundError, names) -> click.ClickException:
    """The error to show for ``err``, with a did-you-mean for the names it is about."""
    message = str(err)
    for name in names:
        hint = dataset_hint(name) if repr(str(name)) in message else ""
        if hint:
            message = message.rstrip(".") + "." + hint
    return click.ClickException(message)


class TaskChoice(click.Choice):
    """The benchmark tasks, failing with a did-you-mean instead of click's bare list."""

    def __init__(self):
        from ..tasks import TASKS

        super().__init__(sorted(TASKS))

    def get_metavar(self, param, ctx=None):
        return "TASK"

    def convert(self, value, param, ctx):
        if value in self.choices:
            return value
        levels_option = ctx is not None and any(p.name == "levels" for p in ctx.command.params)
        self.fail(f"unknown task {value!r}.{task_hint(value, levels_option)} "
                  f"Tasks: {', '.join(self.choices)}.", param, ctx)
