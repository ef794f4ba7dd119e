"""SeMOPO (Wan et al., ICML 2024) in PyTorch: separated world model, conservative sampling, penalized
endogenous policy.

::

    import lqv_d4rl, semopo
    data = lqv_d4rl.load_dataset("walker_walk-medrep")
    agent = semopo.train(data, semopo.preset("paper"), device="cuda", log_dir="runs/walker-medrep")
    result = semopo.evaluate(agent, "walker_walk", episodes=10)          # grayscale distractors
    result_rgb = semopo.evaluate(agent, "walker_walk", episodes=10, rgb_background=True)  # Table 2

Modules, read in this order: :mod:`semopo.config` (every hyperparameter, with its source),
:mod:`semopo.model` (the separated world model and the single-branch ablation), :mod:`semopo.agent`
(penalized actor-critic, the acting policy, checkpoints), :mod:`semopo.train` (the two training
phases, metrics log, resume), :mod:`semopo.evaluate`, :mod:`semopo.analysis` (the paper's Fig. 2/8,
5 and 6 for your run) and :mod:`semopo.cli` (``lqv-d4rl semopo``).

Departures from the released TensorFlow code (each also noted where it is implemented):

* one Adam optimizer over both branches instead of one per branch: every parameter still gets the
  gradient of its own branch's loss, but the gradient-norm clip is global and the joint mask
  decoder, which the released code steps with both optimizers, is stepped once;
* the exogenous RSSM is action-free (its prior takes no action input) rather than fed zero actions;
* the adversarial distractor-reward head of TIA is left out: the released command sets its weight
  (``disen_scales.reward``) to 0;
* Adam has no weight decay (the released optimizers use 1e-6);
* ``exo_only_scale`` is applied once; the released code multiplies its ``disen_only`` weight in
  twice (1.5 -> 2.25 effective), which the ``released`` preset reproduces with 2.25.

Matching the released code: the reward head reads stop-gradient features (``grad_heads none``),
imagined rewards are not normalized (its ``reward_norm`` with momentum 1 is the identity), the
policy phase draws start states from uniformly sampled batches, and the penalty keeps its gradient
into the imagined actions.
"""

from .agent import SeMOPOAgent, SeMOPOPolicy
from .config import PRESETS, ConfigError, SeMOPOConfig, preset
from .evaluate import evaluate
from .model import JointWorldModel, SeparatedWorldModel, build_world_model
from .train import ResumeMismatchError, RunExistsError, read_metrics, train

__all__ = [
    "PRESETS",
    "ConfigError",
    "JointWorldModel",
    "ResumeMismatchError",
    "RunExistsError",
    "SeMOPOAgent",
    "SeMOPOConfig",
    "SeMOPOPolicy",
    "SeparatedWorldModel",
    "build_world_model",
    "evaluate",
    "preset",
    "read_metrics",
    "train",
]
