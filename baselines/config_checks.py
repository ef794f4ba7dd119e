"""Validation of config fields: each check raises :class:`lqv_d4rl.algorithms.ConfigError` naming the
field, its value and what it must be (used in the ``__post_init__`` of the baselines' configs)."""

from lqv_d4rl.algorithms import ConfigError


def positive_ints(config, *names):
    """Each field in ``names`` must be an integer >= 1."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def counts(config, *names):
    """Each field in ``names`` must be an integer >= 0 (numbers of updates, transitions)."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")


def optional_positive_ints(config, *names):
    """Each field in ``names`` must be None or an integer >= 1."""
    for name in names:
        if getattr(config, name) is not None:
            positive_ints(config, name)


def positive(config, *names):
    """Each field in ``names`` must be a number > 0 (learning rates, epsilons, clips)."""
    for name in names:
        if not _number(getattr(config, name)) or not getattr(config, name) > 0:
            raise ConfigError(f"{name} must be > 0, got {getattr(config, name)!r}")


def non_negative(config, *names):
    """Each field in ``names`` must be a number >= 0 (loss weights, penalty weights)."""
    for name in names:
        if not _number(getattr(config, name)) or not getattr(config, name) >= 0:
            raise ConfigError(f"{name} must be >= 0, got {getattr(config, name)!r}")


def unit_interval(config, *names):
    """Each field in ``names`` must lie in [0, 1] (discounts, lambda, KL balance, tau)."""
    for name in names:
        if not _number(getattr(config, name)) or not 0 <= getattr(config, name) <= 1:
            raise ConfigError(f"{name} must lie in [0, 1], got {getattr(config, name)!r}")


def choice(config, name, choices):
    """Field ``name`` must be one of ``choices``."""
    value = getattr(config, name)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
