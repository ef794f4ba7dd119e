"""The ``lqv-d4rl`` command line: plain verbs, one module per group of related verbs.

Each module in this package exposes ``COMMANDS``, a list of click commands that is added to the
main group below. Modules import heavy libraries (MuJoCo, torch, h5py) inside the commands, so that
``lqv-d4rl --help`` answers at once.
"""

import click

from .. import __version__
from . import data_commands, env_commands, generate_commands, hub_commands, semopo_commands

_COMMAND_MODULES = (
    env_commands,
    generate_commands,
    data_commands,
    hub_commands,
    semopo_commands,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lqv-d4rl")
def main():
    """LQV-D4RL: offline visual RL datasets with driving-video distractors."""


for _module in _COMMAND_MODULES:
    for _command in _module.COMMANDS:
        main.add_command(_command)
