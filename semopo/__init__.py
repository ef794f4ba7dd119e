"""SeMOPO (Wan et al., ICML 2024) in PyTorch: separated world model, conservative sampling, penalized
endogenous policy.

::

    lqv-d4rl train semopo walker_walk-medrep --preset paper --device cuda --out runs/walker-medrep

or in Python::

    import lqv_d4rl, semopo
    from lqv_d4rl.evaluation import evaluate
    data = lqv_d4rl.load_dataset("walker_walk-medrep")
    agent = semopo.train(data, semopo.preset("paper"), device="cuda", log_dir="runs/walker-medrep")
    result = evaluate(agent.policy(), data.eval_env_kwargs(), episodes=10, first_episode_seed=10_000)

Modules, read in this order: :mod:`semopo.config` (every hyperparameter, with its source),
:mod:`semopo.model` (the separated world model and the joint-model ablation), :mod:`semopo.agent`
(penalized actor-critic, the acting policy, checkpoints), :mod:`semopo.training` (the two training
phases in a run folder), :mod:`semopo.analysis` (the paper's Fig. 2/8, 5 and 6 for your run) and
:mod:`semopo.algorithm` (the registry entry).

Where this implementation departs from the paper and from the released TensorFlow code is listed
in one place: docs/departures.md.

Names are imported lazily, so that reading a config (``semopo.config``) does not start torch.
"""

import importlib

_LAZY_EXPORTS = {
    "SeMOPOAgent": "semopo.agent",
    "PRESETS": "semopo.config",
    "ConfigError": "semopo.config",
    "SeMOPOConfig": "semopo.config",
    "preset": "semopo.config",
    "JointWorldModel": "semopo.model",
    "SeparatedWorldModel": "semopo.model",
    "build_world_model": "semopo.model",
    "train": "semopo.training",
    "ALGORITHM": "semopo.algorithm",
    "ResumeMismatchError": "lqv_d4rl.runs",
    "RunExistsError": "lqv_d4rl.runs",
    "read_metrics": "lqv_d4rl.runs",
}

__all__ = sorted(_LAZY_EXPORTS)


def __getattr__(name):
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'semopo' has no attribute {name!r}")
    return getattr(importlib.import_module(module_name), name)


def __dir__():
    return __all__
