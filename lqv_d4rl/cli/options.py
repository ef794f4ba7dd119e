"""Options several verbs share, worded once, and :func:`deprecated_alias` for renamed options."""

import functools
from pathlib import Path

import click
from click.core import ParameterSource

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


# ------------------------------------------------------------------------ deprecated names


def deprecation_warning(old: str, new: str, command: str = "") -> str:
    """The warning printed when a deprecated option name is used (worded once for every verb)."""
    where = f" of `{command}`" if command else ""
    return f"Warning: option {old}{where} is deprecated and will be removed; use {new} instead."


def deprecated_alias(old: str, new, *, help_text: str | None = None, **option_kwargs):
    """Decorator: a hidden option ``old`` that is an old name of the option ``new``.

    ``new`` is the new option's flag (``"--eval-workers"``; its value goes to the parameter of
    that name, ``eval_workers``), or a function of the command's other values returning that flag
    (for an old name that now splits into several, e.g. ``generate --workers``). When ``old`` is
    given, a warning goes to stderr and its value replaces the new option's; giving both is a
    usage error. ``option_kwargs`` (type, is_flag, ...) are those of the new option. Put the
    decorator above the command's other options (it wraps the function they decorate).
    """
    alias_dest = "deprecated_" + old.lstrip("-").replace("-", "_")

    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            value = kwargs.pop(alias_dest)
            ctx = click.get_current_context()
            if _given(ctx, alias_dest):
                flag = new(kwargs) if callable(new) else new
                dest = flag.lstrip("-").replace("-", "_")
                if _given(ctx, dest):
                    raise click.UsageError(f"{old} is the deprecated name of {flag}; give {flag} "
                                           "only", ctx)
                click.echo(deprecation_warning(old, flag, ctx.command_path), err=True)
                kwargs[dest] = value
            return function(*args, **kwargs)

        what = new if isinstance(new, str) else "the options that replace it"
        option = click.option(old, alias_dest, hidden=True, default=None,
                              help=help_text or f"Deprecated name of {what}.", **option_kwargs)
        return option(wrapper)

    return decorate


def _given(ctx, name) -> bool:
    """Whether the parameter ``name`` got its value from the command line or the environment."""
    source = ctx.get_parameter_source(name)
    return source is not None and source not in (ParameterSource.DEFAULT,
                                                 ParameterSource.DEFAULT_MAP)
