"""The ``lqv-d4rl`` command line: plain verbs, one module per group of related verbs.

Each module in this package exposes ``COMMANDS``, a list of click commands that is added to the
main group below. Modules import heavy libraries (MuJoCo, torch, h5py) inside the commands, so that
``lqv-d4rl --help`` answers at once.
"""

import os

import click

from .. import __version__
from ..errors import LQVError
from . import data_commands, env_commands, generate_commands, hub_commands, train_commands
from . import uncertainty_commands
from . import leaderboard_commands
from . import exogenous_commands
from .hints import cli_error

_COMMAND_MODULES = (
    env_commands,
    generate_commands,
    exogenous_commands,
    data_commands,
    hub_commands,
    train_commands,
    uncertainty_commands,
    leaderboard_commands,
)


class _Group(click.Group):
    """Reports file-system errors (a folder that cannot be made, a file that cannot be written) and
    the toolkit's own errors as one-line messages instead of tracebacks, for every verb; builds the
    short forms of ``train`` (``lqv-d4rl semopo``) only when they are invoked."""

    def list_commands(self, ctx):
        return sorted([*super().list_commands(ctx), *train_commands.LAZY_COMMANDS])

    def get_command(self, ctx, name):
        if name in train_commands.LAZY_COMMANDS:
            return train_commands.LAZY_COMMANDS[name]()
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        rows = [(name, self.commands[name].get_short_help_str(60)) for name in sorted(self.commands)]
        rows += [(name, f"Short for `lqv-d4rl train {target}`.")
                 for name, target in train_commands.SHORT_FORMS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LQVError as err:
            raise cli_error(err) from None  # exit 2 for a usage error, else 1
        except OSError as err:
            if err.filename is None or isinstance(err, BrokenPipeError):
                raise
            where = os.fsdecode(err.filename)
            if isinstance(err, FileExistsError) and os.path.isfile(where):
                raise click.ClickException(
                    f"{where!r} is a file, so no folder can be made there; check the path"
                ) from None
            raise click.ClickException(
                f"{err.strerror or err}: {where!r}; check the path and its permissions"
            ) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                           "show_default": True})  # every verb's --help
@click.version_option(__version__, prog_name="lqv-d4rl")
def main():
    """LQV-D4RL: offline visual RL datasets with driving-video distractors."""


for _module in _COMMAND_MODULES:
    for _command in _module.COMMANDS:
        main.add_command(_command)
