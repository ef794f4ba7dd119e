"""Options several verbs share, worded once."""

from pathlib import Path

import click

ROOT_DEFAULT = "default: $LQV_D4RL_ROOT, else ~/.lqv_d4rl"
"""How every ``--root`` help text names the default dataset root."""
ROOT_HELP = f"Dataset root ({ROOT_DEFAULT})."


def root_option(command):
    """Add ``--root`` (a dataset root folder, passed as a Path or None) to a click command."""
    return click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help=ROOT_HELP)(command)


def check_repo_id(ctx, param, repo_id):
    """click callback: a Hub repository id must look like ``owner/name`` (else a usage error)."""
    if repo_id is None:
        return None
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise click.BadParameter(f"{repo_id!r} is not a Hub repository id ({err}); write it "
                                 "as owner/name, e.g. my-org/lqv-d4rl") from None
    return repo_id


def check_levels(ctx, param, levels):
    """click callback: comma-separated dataset levels, each one of random, medrep, medium."""
    from ..tasks import LEVELS

    names = [part.strip() for part in levels.split(",") if part.strip()]
    unknown = [name for name in names if name not in LEVELS]
    if unknown or not names:
        raise click.BadParameter(f"{levels!r}: the levels are {', '.join(LEVELS)} "
                                 "(comma-separated, e.g. random,medium)")
    return levels


def check_device_name(ctx, param, device):
    """click callback of every ``--device`` option: a torch device this machine has (cpu, cuda,
    cuda:N), else a usage error of one line (:func:`lqv_d4rl.torch_data.check_device`)."""
    if device is None or device == "cpu":
        return device
    from ..torch_data import DeviceUnavailableError, check_device

    try:
        check_device(device)
    except DeviceUnavailableError as err:
        raise click.BadParameter(str(err)) from None
    return device
