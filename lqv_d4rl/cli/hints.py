"""Did-you-mean hints for mistyped task names and dataset ids on the command line.

``walker-walk``, ``Walker_Walk`` and ``walker_walk_medrep`` are not benchmark ids, so the library
takes them for custom dataset names and only says that no such dataset exists; these helpers add
the benchmark name the user most likely meant.
"""

import difflib
import os

import click

from ..errors import DatasetNotFoundError


def _normalized(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


def task_hint(name: str, levels_option: bool = False) -> str:
    """`` Did you mean ...?`` for a mistyped task, or the task of a dataset id (and, where the
    command has ``--levels``, how to make only that level)."""
    from ..tasks import LEVELS, TASKS

    head, _, level = str(name).rpartition("-")
    if _normalized(head) in TASKS and level in LEVELS:
        how = f" (add --levels {level} to make only that level)" if levels_option else ""
        return f" {name!r} is a dataset id; its task is {_normalized(head)!r}{how}."
    close = difflib.get_close_matches(_normalized(name), list(TASKS), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def dataset_hint(name: str) -> str:
    """`` Did you mean ...?`` naming the benchmark ids close to ``name`` ('' when none is)."""
    from ..registry import DATASET_IDS
    from ..tasks import TASKS

    if os.sep in str(name):
        return ""
    key = _normalized(name)
    if key in TASKS:
        ids = ", ".join(repr(f"{key}-{level}") for level in ("random", "medrep", "medium"))
        what = "is a task" if key == name else f"looks like the task {key!r}"
        return f" {name!r} {what}; its datasets are {ids}."
    by_key = {_normalized(dataset_id): dataset_id for dataset_id in DATASET_IDS}
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
