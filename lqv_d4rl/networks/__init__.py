"""Neural building blocks shared by TIA, SeMOPO, Offline DV2 and LOMPO (PyTorch).

Modules, read in this order:

* :mod:`~lqv_d4rl.networks.conv` – :class:`ConvEncoder` (64x64 images -> ``32 * depth`` features),
  :class:`ConvDecoder` (features -> image mean), :class:`MaskDecoder` (mean + mask logits),
  :func:`preprocess_image` (uint8 -> ``x / 255 - 0.5``).
* :mod:`~lqv_d4rl.networks.distributions` – straight-through one-hot categorical latents, diagonal
  Gaussian latents, :class:`TruncatedNormal` / :class:`TanhNormal` actions, the image likelihood.
* :mod:`~lqv_d4rl.networks.rssm` – :class:`RSSM`: ``initial``, ``observe``, ``obs_step``,
  ``img_step``, ``imagine``, ``features``, ``ensemble_prior_stats``; states are dicts of tensors.
* :mod:`~lqv_d4rl.networks.losses` – :func:`kl_balanced` and the ensemble disagreement penalties
  (:func:`disagreement_semopo_paper`, :func:`disagreement_semopo_code`, :func:`disagreement_lompo`,
  :func:`state_disagreement` at given latent states and :func:`imagination_disagreement` along an
  imagined rollout).
* :mod:`~lqv_d4rl.networks.heads` – :class:`MLP`, :class:`DenseHead`, :class:`ActionHead`.
* :mod:`~lqv_d4rl.networks.mask` – :class:`JointMaskDecoder`: two branches blended by a learned mask;
  :class:`JointStateDecoder`: the same for state vectors, with a per-dimension gate.
* :mod:`~lqv_d4rl.networks.world_model` – :class:`WorldModel`: a single-branch DreamerV2 model
  (``loss``, ``train_step``, ``imagine``, ``reward``).
* :mod:`~lqv_d4rl.networks.behavior` – :class:`ActorCritic`: imagination actor-critic
  (``policy``, ``imagine``, ``train_step``) and :func:`lambda_return`.
* :mod:`~lqv_d4rl.networks.optim` – :class:`Optimizer` (Adam, clipping, DreamerV2's weight
  decay, fp16 scaling), :func:`step_together` (optimizers that share parameters), :func:`autocast`,
  :func:`count_parameters`.

A typical offline model-based loop::

    model = WorldModel(action_dim, WorldModelConfig(ensemble=7))
    agent = ActorCritic(model.rssm.feature_dim, action_dim, BehaviorConfig(horizon=5))
    post, _ = model.train_step(batch)                       # batch from a SequenceSampler
    agent.train_step(flatten_states(post), model.imagine, model.reward)
"""

from lqv_d4rl.networks.behavior import ActorCritic, BehaviorConfig, lambda_return
from lqv_d4rl.networks.conv import ConvDecoder, ConvEncoder, MaskDecoder, preprocess_image
from lqv_d4rl.networks.distributions import (
    OneHotStraightThrough,
    TanhNormal,
    TruncatedNormal,
    categorical_latent,
    gaussian_latent,
    image_log_likelihood,
)
from lqv_d4rl.networks.heads import MLP, ActionHead, DenseHead
from lqv_d4rl.networks.losses import (
    disagreement_lompo,
    disagreement_semopo_code,
    disagreement_semopo_paper,
    ensemble_log_probs,
    ensemble_predictions,
    imagination_disagreement,
    kl_balanced,
    latent_dist,
    latent_kl,
    state_disagreement,
)
from lqv_d4rl.networks.mask import (
    JointImage,
    JointMaskDecoder,
    JointState,
    JointStateDecoder,
    MaskCombiner,
    StateGateCombiner,
)
from lqv_d4rl.networks.optim import Optimizer, autocast, count_parameters, step_together
from lqv_d4rl.networks.rssm import (
    ENSEMBLE_SIZE,
    RSSM,
    Imagination,
    LayerNormGRUCell,
    StandardGRUCell,
    detach_states,
    flatten_states,
    map_states,
    stack_states,
)
from lqv_d4rl.networks.world_model import WorldModel, WorldModelConfig

__all__ = [
    "ENSEMBLE_SIZE",
    "MLP",
    "RSSM",
    "ActionHead",
    "ActorCritic",
    "BehaviorConfig",
    "ConvDecoder",
    "ConvEncoder",
    "DenseHead",
    "Imagination",
    "JointImage",
    "JointMaskDecoder",
    "JointState",
    "JointStateDecoder",
    "LayerNormGRUCell",
    "MaskCombiner",
    "MaskDecoder",
    "OneHotStraightThrough",
    "Optimizer",
    "StandardGRUCell",
    "StateGateCombiner",
    "TanhNormal",
    "TruncatedNormal",
    "WorldModel",
    "WorldModelConfig",
    "autocast",
    "categorical_latent",
    "count_parameters",
    "detach_states",
    "disagreement_lompo",
    "disagreement_semopo_code",
    "disagreement_semopo_paper",
    "ensemble_log_probs",
    "ensemble_predictions",
    "flatten_states",
    "gaussian_latent",
    "image_log_likelihood",
    "imagination_disagreement",
    "kl_balanced",
    "lambda_return",
    "latent_dist",
    "latent_kl",
    "map_states",
    "preprocess_image",
    "stack_states",
    "state_disagreement",
    "step_together",
]
