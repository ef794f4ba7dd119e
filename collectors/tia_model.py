"""TIA's two-branch world model (Fu et al. 2021, "Learning Task Informed Abstractions", ICML).

Two Dreamer-v1 RSSMs (Gaussian latents, both given actions), each with its own conv encoder:

* the **task** branch models what matters for reward: its features feed the reward head, and the
  actor-critic learns in its latent space;
* the **distractor** branch models everything else (the driving video behind the agent).

Images are decoded jointly: each branch's :class:`~lqv_d4rl.networks.MaskDecoder` gives a mean and
mask logits, and :class:`~lqv_d4rl.networks.JointMaskDecoder` blends the means with a learned mask,
``m * task_mean + (1 - m) * distractor_mean``. The distractor branch also has its own image decoder.

Losses (averaged over batch and time; "ll" = log-likelihood)::

    task       = KL_task - ll(joint image) - ll(reward | task features)
    distractor = KL_dis  - ll(joint image) - 1.5 ll(distractor-only image)
                 + lambda_adv * ll(reward | distractor features; distractor reward head held fixed)

The last term is adversarial: minimizing it pushes reward information *out* of the distractor
branch. Before it is computed, the distractor reward head is fitted for 20 Adam steps on
stop-gradient distractor features (:meth:`TIAWorldModel.fit_distractor_reward_head`), so the term
measures what the best reward predictor can still read from the distractor features.

As in the published code, each parameter group has its own optimizer: the task branch (encoder,
RSSM, reward head) follows the task loss, the distractor branch (encoder, RSSM, distractor-only
decoder) the distractor loss, and the joint decoder the sum of both; the distractor reward head
follows only its own fitting loss.
"""

import torch
from torch import nn

from lqv_d4rl.networks import (
    RSSM,
    ConvDecoder,
    ConvEncoder,
    DenseHead,
    JointMaskDecoder,
    image_log_likelihood,
    kl_balanced,
    latent_kl,
    preprocess_image,
)

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU}


def dreamer_v1_kl(posterior, prior, free_nats, balance=None):
    """The KL term of a Gaussian RSSM; returns ``(loss, kl)`` with ``kl`` per element, detached.

    ``balance=None`` is Dreamer-v1 / TIA: ``max(mean KL(post || prior), free_nats)``, whose gradient
    trains prior and posterior alike and vanishes while the mean KL is below ``free_nats``. A float
    uses DreamerV2's KL balancing (:func:`lqv_d4rl.networks.kl_balanced`) with that balance instead.
    """
    if balance is not None:
        return kl_balanced(posterior, prior, balance, free_nats, free_average=True)
    kl = latent_kl(posterior, prior)
    return kl.mean().clamp_min(free_nats), kl.detach()


def explained_variance(prediction, target):
    """``1 - mean((target - prediction)**2) / var(target)`` over all elements, a detached scalar.

    1 is a perfect prediction, 0 is no better than predicting the batch mean, below 0 is worse. For
    TIA's reward heads it says what a likelihood cannot: whether a branch reads the reward from the
    image at all (the task head should approach 1, the fixed distractor head stay near 0).
    """
    target, prediction = target.detach().float(), prediction.detach().float()
    error = (target - prediction).pow(2).mean()
    return 1.0 - error / target.var(unbiased=False).clamp_min(1e-8)


def half_gradient(tensor):
    """``tensor`` in the forward pass, half of the incoming gradient in the backward pass."""
    return 0.5 * tensor + 0.5 * tensor.detach()


class TIAWorldModel(nn.Module):
    """The networks of TIA's world model and its losses.

    Args:
        config: a :class:`collectors.tia.TIAConfig` (sizes and loss weights).
        action_dim: size of the action vector.
    """

    def __init__(self, config, action_dim):
        super().__init__()
        if config.cnn_activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown cnn_activation {config.cnn_activation!r}; choose one of {sorted(ACTIVATIONS)}"
            )
        self.config = config
        activation = ACTIVATIONS[config.cnn_activation]
        self.task_encoder = ConvEncoder(config.cnn_depth, activation=activation)
        self.task_rssm = self._rssm(self.task_encoder.output_dim, action_dim, config.deter, config.stoch)
        self.reward_head = DenseHead(self.task_rssm.feature_dim, (), "normal", config.reward_layers, config.units)
        self.distractor_encoder = ConvEncoder(config.distractor_cnn_depth, activation=activation)
        self.distractor_rssm = self._rssm(
            self.distractor_encoder.output_dim, action_dim, config.distractor_deter, config.distractor_stoch
        )
        self.distractor_decoder = ConvDecoder(
            self.distractor_rssm.feature_dim, config.distractor_cnn_depth, activation=activation
        )
        self.distractor_reward_head = DenseHead(
            self.distractor_rssm.feature_dim, (), "normal", config.distractor_reward_layers, config.units
        )
        self.joint_decoder = JointMaskDecoder(
            self.task_rssm.feature_dim, self.distractor_rssm.feature_dim, config.cnn_depth,
            exo_depth=config.distractor_cnn_depth, activation=activation,
        )

    def _rssm(self, embed_dim, action_dim, deter, stoch):
        cfg = self.config
        return RSSM(embed_dim, action_dim, deter=deter, stoch=stoch, classes=None, hidden=cfg.hidden,
                    min_std=cfg.min_std, cell=cfg.cell, layer_norm=cfg.gru_layer_norm)

    # ------------------------------------------------------------------------ parameter groups

    def task_parameters(self):
        """Task encoder, task RSSM and reward head: trained by the task loss."""
        return [*self.task_encoder.parameters(), *self.task_rssm.parameters(), *self.reward_head.parameters()]

    def distractor_parameters(self):
        """Distractor encoder, RSSM and distractor-only decoder: trained by the distractor loss."""
        return [*self.distractor_encoder.parameters(), *self.distractor_rssm.parameters(),
                *self.distractor_decoder.parameters()]

    def decoder_parameters(self):
        """Both mask decoders and the mask combiner: trained by the sum of both losses."""
        return list(self.joint_decoder.parameters())

    # ------------------------------------------------------------------------ forward passes

    def observe(self, data):
        """Posterior and prior states of both branches for a batch of tensors (see ``to_tensors``).

        Returns a dict with ``task_post``, ``task_prior``, ``distractor_post``, ``distractor_prior``
        (state dicts of ``(B, T, ...)`` tensors) and the features ``task_features`` and
        ``distractor_features`` ``(B, T, F)``.
        """
        task_post, task_prior = self.task_rssm.observe(
            self.task_encoder(data["image"]), data["action"], data["is_first"]
        )
        distractor_post, distractor_prior = self.distractor_rssm.observe(
            self.distractor_encoder(data["image"]), data["action"], data["is_first"]
        )
        return {
            "task_post": task_post, "task_prior": task_prior,
            "distractor_post": distractor_post, "distractor_prior": distractor_prior,
            "task_features": self.task_rssm.features(task_post),
            "distractor_features": self.distractor_rssm.features(distractor_post),
        }

    def decode_joint(self, task_features, distractor_features):
        """The joint image (a :class:`~lqv_d4rl.networks.JointImage`) of both branches' features."""
        return self.joint_decoder(task_features, distractor_features)

    # ------------------------------------------------------------------------ distractor reward head

    def distractor_reward_log_prob(self, distractor_features, reward):
        """Mean log-likelihood of ``reward`` under the distractor reward head (trainable head)."""
        return self.distractor_reward_head(distractor_features).log_prob(reward).mean()

    def fit_distractor_reward_head(self, distractor_features, reward, optimizer, steps):
        """Fit the distractor reward head for ``steps`` optimizer steps on stop-gradient features.

        Returns the head's loss (negative mean log-likelihood) after the last step, detached.
        """
        features = distractor_features.detach()
        loss = None
        for _ in range(steps):
            loss = -self.distractor_reward_log_prob(features, reward)
            optimizer.step(loss)
        return loss.detach() if loss is not None else torch.zeros(())

    def fixed_head_reward(self, distractor_features):
        """The distractor reward head's prediction with the head held fixed.

        The head is evaluated with detached copies of its parameters, so the gradient reaches the
        distractor features (and through them the distractor encoder and RSSM) but never the head.
        """
        head = self.distractor_reward_head
        fixed = {name: value.detach() for name, value in head.named_parameters()}
        return torch.func.functional_call(head, fixed, (distractor_features,))

    def fixed_head_reward_log_prob(self, distractor_features, reward):
        """Mean log-likelihood of ``reward`` under :meth:`fixed_head_reward`."""
        return self.fixed_head_reward(distractor_features).log_prob(reward).mean()

    def adversarial_term(self, distractor_features, reward):
        """``lambda_adv * ll(reward | distractor features)``, exactly as added to the distractor loss.

        Minimizing the distractor loss therefore lowers how well the (just fitted, now fixed)
        distractor reward head can read the reward from the distractor features.
        """
        return self.config.adversarial_scale * self.fixed_head_reward_log_prob(distractor_features, reward)

    # ------------------------------------------------------------------------ losses

    def losses(self, data, observed):
        """Both branch losses and the combined objective for one backward pass.

        Args:
            data: batch tensors (``image`` uint8, ``reward``, ...).
            observed: the output of :meth:`observe` on ``data``.
        Returns:
            ``(objective, metrics)``. ``objective`` has, for every parameter group, the gradient of
            that group's loss: the joint image term is taken twice (it is in both losses, and the
            joint decoder follows their sum), while the branch features enter the joint decoder
            through :func:`half_gradient`, so each branch gets the joint-image gradient once.
            ``metrics`` holds detached scalars: ``task_loss``, ``distractor_loss`` and
            ``model_loss`` (their sum without the adversarial term) and the terms.
        """
        cfg = self.config
        task_features, distractor_features = observed["task_features"], observed["distractor_features"]
        target = preprocess_image(data["image"])
        task_kl_loss, task_kl = dreamer_v1_kl(
            observed["task_post"], observed["task_prior"], cfg.free_nats, cfg.kl_balance
        )
        distractor_kl_loss, distractor_kl = dreamer_v1_kl(
            observed["distractor_post"], observed["distractor_prior"], cfg.free_nats, cfg.kl_balance
        )
        joint = self.decode_joint(half_gradient(task_features), half_gradient(distractor_features))
        joint_ll = joint.log_prob(target).mean()
        distractor_only_ll = image_log_likelihood(self.distractor_decoder(distractor_features), target).mean()
        reward_prediction = self.reward_head(task_features)
        reward_ll = reward_prediction.log_prob(data["reward"]).mean()
        adversarial = self.adversarial_term(distractor_features, data["reward"])
        with torch.no_grad():
            adversarial_prediction = self.fixed_head_reward(distractor_features)
            adversarial_ll = adversarial_prediction.log_prob(data["reward"]).mean()

        task_rest = cfg.kl_scale * task_kl_loss - cfg.reward_scale * reward_ll
        distractor_rest = (cfg.distractor_kl_scale * distractor_kl_loss
                           - cfg.distractor_image_scale * distractor_only_ll + adversarial)
        objective = task_rest + distractor_rest - 2.0 * joint_ll

        task_loss = (task_rest - joint_ll).detach()
        distractor_loss = (distractor_rest - joint_ll).detach()
        metrics = {
            "task_loss": task_loss,
            "distractor_loss": distractor_loss,
            "model_loss": task_loss + distractor_loss - adversarial.detach(),
            "task_kl": task_kl.mean(),
            "distractor_kl": distractor_kl.mean(),
            "joint_image_log_prob": joint_ll.detach(),
            "distractor_only_image_log_prob": distractor_only_ll.detach(),
            "reward_log_prob": reward_ll.detach(),
            "adversarial_reward_log_prob": adversarial_ll.detach(),
            "reward_explained_variance": explained_variance(reward_prediction.mean, data["reward"]),
            "adversarial_reward_explained_variance": explained_variance(
                adversarial_prediction.mean, data["reward"]),
            "mask_mean": joint.mask.detach().mean(),
        }
        return objective, metrics
