"""Behaviour policies and data collection for LQV-D4RL.

* :mod:`collectors.tia` – the TIA agent (two-branch world model with reward dissociation).
* :mod:`collectors.vector_env` / :mod:`collectors.ray_workers` – environments in worker processes.
* :mod:`collectors.replay`, :mod:`collectors.online` – online replay and the TIA training loop.
* :mod:`collectors.recorders`, :mod:`collectors.generate` – the random / medrep / medium recorders
  and ``lqv-d4rl generate``.

Names are imported lazily: env worker processes import this package without paying for torch.
"""

import importlib

_LAZY_EXPORTS = {
    "ADVERSARIAL_SCALES": "collectors.tia",
    "TIAAgent": "collectors.tia",
    "TIAConfig": "collectors.tia",
    "TIAInputError": "collectors.tia",
    "benchmark_update": "collectors.tia",
    "make_vector_env": "collectors.vector_env",
}

__all__ = sorted(_LAZY_EXPORTS)


def __getattr__(name):
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'collectors' has no attribute {name!r}")
    return getattr(importlib.import_module(module_name), name)


def __dir__():
    return __all__
