"""SeMOPO's separated world model: an endogenous (task) branch and an action-free exogenous branch.

Endogenous branch s+ (what the agent controls)::

    e+_t = encoder(o_t);   q~(s+_t | s+_{t-1}, a_{t-1}, e+_t);   T~_k(s+_t | s+_{t-1}, a_{t-1}), k = 1..K

an ensemble RSSM (one layer-norm GRU, K prior heads, one head drawn per step). A reward MLP reads
*stop-gradient* endogenous features, so the reward never shapes the latent.

Exogenous branch s- (the distractor): its own encoder and RSSM whose prior ignores actions,
``T-(s-_t | s-_{t-1})``; its own mask decoder and an exogenous-only image decoder.

Joint image (:class:`lqv_d4rl.networks.JointMaskDecoder`)::

    mean = m * mean+ + (1 - m) * mean-,   m = sigmoid(conv1x1([mask+, mask-]))

Loss, the negative ELBO of the paper's Sec. 3.3 plus the two heads' terms (batch and time means)::

    loss = kl_scale * KLbal(q~ || T~) + exo_kl_scale * KLbal(q- || T-) - image_scale * log U(o | s+, s-)
           - exo_only_scale * log p(o | s-) - reward_scale * log p(r | sg(s+))

``log p(o | s-)`` is not in the paper's ELBO: the released code adds it to the exogenous branch's loss
(TIA's distractor-only reconstruction). It makes s- explain as much of the image as it can alone,
which leaves s+ only what s- cannot predict without the actions: the agent. Its gradient reaches
only the exogenous encoder, RSSM and exogenous-only decoder. The reward and exo-only terms touch
disjoint parameters from the KLs of the other branch, so one optimizer over the sum updates every
parameter with the gradient of its own branch's loss (see the module docs of ``semopo`` for the one
difference from the released two-optimizer update).
"""

import torch
from torch import nn

from lqv_d4rl.networks import (
    RSSM,
    ConvDecoder,
    ConvEncoder,
    DenseHead,
    JointMaskDecoder,
    Optimizer,
    WorldModel,
    WorldModelConfig,
    autocast,
    detach_states,
    image_log_likelihood,
    imagination_disagreement,
    kl_balanced,
    preprocess_image,
)
from lqv_d4rl.networks.world_model import batch_to_tensors


class SeparatedWorldModel(nn.Module):
    """The two-branch world model of SeMOPO, trained by :meth:`train_step` on sequence batches.

    Attributes named like those of the single-branch ``WorldModel`` (``encoder``, ``rssm``,
    ``reward_head``, ``optimizer``) belong to the endogenous branch, so the policy code treats both
    models alike; the exogenous branch is ``exo_encoder``, ``exo_rssm``, ``exo_only_decoder``, and
    ``decoder`` is the joint mask decoder of both.

    Args:
        action_dim: size of the action vector.
        config: a :class:`semopo.config.SeMOPOConfig`.
        device: where the networks live.
        seed: seeds the generators that draw the ensemble heads of both RSSMs.
    """

    separated = True

    def __init__(self, action_dim, config, device="cpu", seed=0):
        super().__init__()
        cfg = self.config = config
        self.device = torch.device(device)
        self.encoder = ConvEncoder(cfg.depth)
        self.rssm = RSSM(self.encoder.output_dim, action_dim, cfg.deter, cfg.stoch, cfg.classes,
                         cfg.hidden, cfg.ensemble, seed=seed)
        self.reward_head = DenseHead(self.rssm.feature_dim, (), "normal", cfg.reward_layers, cfg.units)
        self.exo_encoder = ConvEncoder(cfg.depth)
        self.exo_rssm = RSSM(self.exo_encoder.output_dim, action_dim, cfg.deter, cfg.stoch,
                             cfg.classes, cfg.hidden, cfg.exo_ensemble, action_free=True,
                             seed=seed + 1)
        self.decoder = JointMaskDecoder(self.rssm.feature_dim, self.exo_rssm.feature_dim, cfg.depth)
        # without its loss term the exogenous-only decoder would be dead weight (and a third of the
        # decoding cost), so it is only built when the term is on
        self.exo_only_decoder = (ConvDecoder(self.exo_rssm.feature_dim, cfg.depth)
                                 if cfg.exo_only_scale > 0 else None)
        self.to(self.device)
        self.optimizer = Optimizer("model", self, cfg.model_lr, cfg.eps, cfg.clip,
                                   precision=cfg.precision, device=self.device)

    # ----------------------------------------------------------------------------- filtering

    def observe(self, batch, state=None):
        """Endogenous posterior and prior states ``(B, T, ...)`` of a batch (what the policy uses)."""
        data = batch_to_tensors(batch, self.device)
        return self.rssm.observe(self.encoder(data["image"]), data["action"], data["is_first"], state)

    def observe_exogenous(self, batch, state=None):
        """Exogenous posterior and prior states ``(B, T, ...)``; the batch's actions are ignored."""
        data = batch_to_tensors(batch, self.device)
        return self.exo_rssm.observe(self.exo_encoder(data["image"]), data["action"],
                                     data["is_first"], state)

    # ----------------------------------------------------------------------------- loss

    def loss_terms(self, batch):
        """Every term of the loss, unweighted, with gradients; returns ``(terms, endo_post, extras)``.

        ``terms``: ``kl_endo``, ``kl_exo`` (balanced KL losses with free nats), ``image_log_prob``
        (joint image), ``reward_log_prob`` and, when ``exo_only_scale > 0``, ``exo_only_log_prob``
        (means over batch and time).
        ``extras``: detached diagnostics (raw KLs, mean mask).
        """
        cfg = self.config
        data = batch_to_tensors(batch, self.device)
        target = preprocess_image(data["image"])
        post, prior = self.rssm.observe(self.encoder(data["image"]), data["action"], data["is_first"])
        exo_post, exo_prior = self.exo_rssm.observe(self.exo_encoder(data["image"]), data["action"],
                                                    data["is_first"])
        kl_endo, kl_endo_raw = kl_balanced(post, prior, cfg.kl_balance, cfg.free_nats)
        kl_exo, kl_exo_raw = kl_balanced(exo_post, exo_prior, cfg.kl_balance, cfg.free_nats)
        features = self.rssm.features(post)
        exo_features = self.exo_rssm.features(exo_post)
        joint = self.decoder(features, exo_features)
        terms = {
            "kl_endo": kl_endo,
            "kl_exo": kl_exo,
            "image_log_prob": joint.log_prob(target).mean(),
            "reward_log_prob": self.reward_head(features.detach()).log_prob(data["reward"]).mean(),
        }
        if self.exo_only_decoder is not None:
            exo_only_mean = self.exo_only_decoder(exo_features)
            terms["exo_only_log_prob"] = image_log_likelihood(exo_only_mean, target).mean()
        extras = {"kl_endo_raw": kl_endo_raw.mean(), "kl_exo_raw": kl_exo_raw.mean(),
                  "mask_mean": joint.mask.mean().detach()}
        return terms, post, extras

    def loss(self, batch):
        """The weighted loss of a batch (see the module docstring); returns ``(loss, post, metrics)``."""
        cfg = self.config
        terms, post, extras = self.loss_terms(batch)
        loss = (cfg.kl_scale * terms["kl_endo"] + cfg.exo_kl_scale * terms["kl_exo"]
                - cfg.image_scale * terms["image_log_prob"]
                - cfg.exo_only_scale * terms.get("exo_only_log_prob", 0.0)
                - cfg.reward_scale * terms["reward_log_prob"])
        metrics = {key: value.detach() for key, value in terms.items()}
        metrics.update(extras)
        return loss, post, metrics

    def train_step(self, batch):
        """One update of both branches; returns ``(endogenous posterior (detached), metrics)``."""
        with autocast(self.device, self.config.precision):
            loss, post, metrics = self.loss(batch)
        metrics.update(self.optimizer.step(loss))
        return detach_states(post), metrics

    # ----------------------------------------------------------------------------- imagination

    def imagine(self, policy, start, horizon, head=None):
        """Endogenous imagined rollout (see ``RSSM.imagine``): one ensemble head drawn per step."""
        return self.rssm.imagine(policy, start, horizon, head)

    def reward(self, imagination):
        """Predicted rewards ``(H, N)`` of the imagined transitions."""
        return self.reward_head(imagination.features[1:]).mean

    def disagreement(self, imagination, kind):
        """Ensemble disagreement ``u`` ``(H, N)`` of the endogenous prior heads along an imagination."""
        return imagination_disagreement(self.rssm, imagination, kind)

    # ----------------------------------------------------------------------------- decoding

    @torch.no_grad()
    def decode_branches(self, endo_state, exo_state):
        """Image means of both branches: a ``JointImage`` (``mean``, ``mask``, ``endo_mean``, ``exo_mean``)
        plus the exogenous-only decoder's mean (None without that decoder), all ``(..., 64, 64, 3)``
        in ``[-0.5, 0.5]`` space."""
        exo_features = self.exo_rssm.features(exo_state)
        joint = self.decoder(self.rssm.features(endo_state), exo_features)
        exo_only = self.exo_only_decoder(exo_features) if self.exo_only_decoder is not None else None
        return joint, exo_only


class JointWorldModel(WorldModel):
    """The single-branch ablation ("joint model", Sec. 4.3): Offline DV2's ensemble world model.

    A ``lqv_d4rl.networks.WorldModel`` with K prior heads and a stop-gradient reward head, set up
    from a :class:`SeMOPOConfig`; it has the same methods as :class:`SeparatedWorldModel` that the
    policy and the analysis use.
    """

    separated = False

    def __init__(self, action_dim, config, device="cpu", seed=0):
        super().__init__(action_dim, WorldModelConfig.from_config(
            config, reward_stop_grad=True, seed=seed), device=device)

    def disagreement(self, imagination, kind):
        """Ensemble disagreement ``u`` ``(H, N)`` of the prior heads along an imagination."""
        return imagination_disagreement(self.rssm, imagination, kind)


def build_world_model(action_dim, config, device="cpu", seed=0):
    """The separated model, or the single-branch ablation when ``config.separated`` is False."""
    model_class = SeparatedWorldModel if config.separated else JointWorldModel
    return model_class(action_dim, config, device=device, seed=seed)
