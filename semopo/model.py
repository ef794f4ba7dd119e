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
only the exogenous encoder, RSSM and exogenous-only decoder.

Two ways to step it (``config.optimizer``): ``joint``, one Adam over the sum, which gives every
parameter the gradient of its own branch's terms (the joint mask decoder that of the image term
once); or ``per_branch``, the released code's two optimizers::

    endogenous loss = kl_scale * KLbal(q~ || T~) - image_scale * log U - reward_scale * log p(r | sg(s+))
    exogenous loss  = exo_kl_scale * KLbal(q- || T-) - image_scale * log U - exo_only_scale * log p(o | s-)

each over its branch's networks plus the joint mask decoder, each clipping its own gradient norm,
both from gradients taken before either steps (:func:`lqv_d4rl.networks.step_together`).

With ``config.observation == "state"`` both branches model the dataset's stored state vectors
(size S) instead of the images: MLP encoders, and in place of the mask decoders a
:class:`lqv_d4rl.networks.JointStateDecoder`, the state analogue of the joint mask::

    state mean = g * mean+ + (1 - g) * mean-,   g_i = sigmoid(w+_i * logit+_i + w-_i * logit-_i + b_i)

(each branch's MLP decoder gives a mean and a gate logit per dimension; one gate per dimension,
a Normal(sigma=1) likelihood over the S entries); the exogenous-only decoder is an MLP that decodes
the state from s- alone. :func:`semopo.analysis.state_gate_analysis` reports the gate per dimension.
"""

import torch
from torch import nn

from lqv_d4rl.networks import (
    MLP,
    RSSM,
    ConvDecoder,
    ConvEncoder,
    DenseHead,
    JointMaskDecoder,
    JointStateDecoder,
    Optimizer,
    WorldModel,
    WorldModelConfig,
    autocast,
    detach_states,
    image_log_likelihood,
    imagination_disagreement,
    kl_balanced,
    preprocess_image,
    step_together,
)
from lqv_d4rl.networks.distributions import unit_normal
from lqv_d4rl.networks.world_model import BATCH_KEYS, STATE_BATCH_KEYS, batch_to_tensors
from lqv_d4rl.observations import world_model_overrides


class SeparatedWorldModel(nn.Module):
    """The two-branch world model of SeMOPO, trained by :meth:`train_step` on sequence batches.

    Attributes named like those of the single-branch ``WorldModel`` (``encoder``, ``rssm``,
    ``reward_head``, ``optimizer``) belong to the endogenous branch, so the policy code treats both
    models alike; the exogenous branch is ``exo_encoder``, ``exo_rssm``, ``exo_only_decoder``, and
    ``decoder`` is the joint mask decoder of both. With ``config.optimizer == "joint"``,
    ``optimizer`` steps every parameter and ``exo_optimizer`` is None; with ``"per_branch"`` they
    are the two branch optimizers (:meth:`endogenous_parameters`, :meth:`exogenous_parameters`).

    Args:
        action_dim: size of the action vector.
        config: a :class:`semopo.config.SeMOPOConfig`.
        device: where the networks live.
        seed: seeds the generators that draw the ensemble heads of both RSSMs.
        state_dim: size S of the state vectors, needed with ``config.observation == "state"``.
    """

    separated = True

    def __init__(self, action_dim, config, device="cpu", seed=0, state_dim=None):
        super().__init__()
        cfg = self.config = config
        self.device = torch.device(device)
        self.observation_key = cfg.observation
        state = cfg.observation == "state"
        layers, units = cfg.state_layers, cfg.state_units  # the MLPs of a state model
        if state:
            state_dim = world_model_overrides(cfg, state_dim)["state_dim"]
        self.encoder = MLP(state_dim, None, layers, units) if state else ConvEncoder(cfg.depth)
        self.rssm = RSSM(self.encoder.output_dim, action_dim, cfg.deter, cfg.stoch, cfg.classes,
                         cfg.hidden, cfg.ensemble, seed=seed)
        self.reward_head = DenseHead(self.rssm.feature_dim, (), "normal", cfg.reward_layers, cfg.units)
        self.exo_encoder = MLP(state_dim, None, layers, units) if state else ConvEncoder(cfg.depth)
        self.exo_rssm = RSSM(self.exo_encoder.output_dim, action_dim, cfg.deter, cfg.stoch,
                             cfg.classes, cfg.hidden, cfg.exo_ensemble, action_free=True,
                             seed=seed + 1)
        features, exo_features = self.rssm.feature_dim, self.exo_rssm.feature_dim
        if state:
            self.decoder = JointStateDecoder(features, exo_features, state_dim, layers, units)
        else:
            self.decoder = JointMaskDecoder(features, exo_features, cfg.depth)
        # without its loss term the exogenous-only decoder would be dead weight (and a third of the
        # decoding cost), so it is only built when the term is on
        self.exo_only_decoder = None
        if cfg.exo_only_scale > 0:
            self.exo_only_decoder = (MLP(exo_features, state_dim, layers, units) if state
                                     else ConvDecoder(exo_features, cfg.depth))
        self.to(self.device)
        self.optimizer, self.exo_optimizer = self._optimizers()

    def _optimizers(self):
        cfg = self.config
        settings = dict(lr=cfg.model_lr, eps=cfg.eps, clip=cfg.clip, weight_decay=cfg.weight_decay,
                        precision=cfg.precision, device=self.device)
        if cfg.optimizer == "joint":
            return Optimizer("model", self, **settings), None
        return (Optimizer("model", self.endogenous_parameters(), **settings),
                Optimizer("exo", self.exogenous_parameters(), **settings))

    def endogenous_parameters(self):
        """What the released ``model_opt`` steps: endogenous encoder, RSSM, reward head and the
        joint mask decoder (``[encoder, rssm, joint_image_head, *heads.values()]``)."""
        return [p for module in (self.encoder, self.rssm, self.reward_head, self.decoder)
                for p in module.parameters()]

    def exogenous_parameters(self):
        """What the released ``disen_model_opt`` steps: exogenous encoder, RSSM, the joint mask
        decoder and the exogenous-only decoder (``[disen_encoder, disen_rssm, joint_image_head,
        disen_only_image_head]``)."""
        modules = (self.exo_encoder, self.exo_rssm, self.decoder, self.exo_only_decoder)
        return [p for module in modules if module is not None for p in module.parameters()]

    # ----------------------------------------------------------------------------- filtering

    @property
    def observation_term(self):
        """Name of the joint observation term: ``image_log_prob`` or ``state_log_prob``."""
        return f"{self.observation_key}_log_prob"

    def to_tensors(self, batch):
        """The batch keys the model needs (images or states, actions, rewards, first flags) as
        tensors on its device."""
        keys = STATE_BATCH_KEYS if self.observation_key == "state" else BATCH_KEYS
        return batch_to_tensors(batch, self.device, keys)

    def observe(self, batch, state=None):
        """Endogenous posterior and prior states ``(B, T, ...)`` of a batch (what the policy uses)."""
        data = self.to_tensors(batch)
        return self.rssm.observe(self.encoder(data[self.observation_key]), data["action"],
                                 data["is_first"], state)

    def observe_exogenous(self, batch, state=None):
        """Exogenous posterior and prior states ``(B, T, ...)``; the batch's actions are ignored."""
        data = self.to_tensors(batch)
        return self.exo_rssm.observe(self.exo_encoder(data[self.observation_key]), data["action"],
                                     data["is_first"], state)

    def _target(self, data):
        """What the decoders reconstruct: preprocessed images, or the state vectors."""
        if self.observation_key == "state":
            return data["state"]
        return preprocess_image(data["image"])

    def _exo_only_log_prob(self, exo_only_mean, target):
        if self.observation_key == "state":
            return unit_normal(exo_only_mean, 1).log_prob(target)
        return image_log_likelihood(exo_only_mean, target)

    # ----------------------------------------------------------------------------- loss

    def loss_terms(self, batch):
        """Every term of the loss, unweighted, with gradients; returns ``(terms, endo_post, extras)``.

        ``terms``: ``kl_endo``, ``kl_exo`` (balanced KL losses with free nats), ``image_log_prob``
        (joint image; ``state_log_prob``, the joint state, for a state model),
        ``reward_log_prob`` and, when ``exo_only_scale > 0``, ``exo_only_log_prob`` (means over
        batch and time).
        ``extras``: detached diagnostics (raw KLs, mean mask; mean gate for a state model).
        """
        cfg = self.config
        data = self.to_tensors(batch)
        observation = data[self.observation_key]
        target = self._target(data)
        post, prior = self.rssm.observe(self.encoder(observation), data["action"], data["is_first"])
        exo_post, exo_prior = self.exo_rssm.observe(self.exo_encoder(observation), data["action"],
                                                    data["is_first"])
        kl_endo, kl_endo_raw = kl_balanced(post, prior, cfg.kl_balance, cfg.free_nats)
        kl_exo, kl_exo_raw = kl_balanced(exo_post, exo_prior, cfg.kl_balance, cfg.free_nats)
        features = self.rssm.features(post)
        exo_features = self.exo_rssm.features(exo_post)
        joint = self.decoder(features, exo_features)
        terms = {
            "kl_endo": kl_endo,
            "kl_exo": kl_exo,
            self.observation_term: joint.log_prob(target).mean(),
            "reward_log_prob": self.reward_head(features.detach()).log_prob(data["reward"]).mean(),
        }
        if self.exo_only_decoder is not None:
            exo_only_mean = self.exo_only_decoder(exo_features)
            terms["exo_only_log_prob"] = self._exo_only_log_prob(exo_only_mean, target).mean()
        extras = {"kl_endo_raw": kl_endo_raw.mean(), "kl_exo_raw": kl_exo_raw.mean()}
        if self.observation_key == "state":
            extras["gate_mean"] = joint.gate.mean().detach()
        else:
            extras["mask_mean"] = joint.mask.mean().detach()
        return terms, post, extras

    def loss(self, batch):
        """The weighted loss of a batch (see the module docstring); returns ``(loss, post, metrics)``."""
        cfg = self.config
        terms, post, extras = self.loss_terms(batch)
        loss = (cfg.kl_scale * terms["kl_endo"] + cfg.exo_kl_scale * terms["kl_exo"]
                - cfg.image_scale * terms[self.observation_term]
                - cfg.exo_only_scale * terms.get("exo_only_log_prob", 0.0)
                - cfg.reward_scale * terms["reward_log_prob"])
        metrics = {key: value.detach() for key, value in terms.items()}
        metrics.update(extras)
        return loss, post, metrics

    def branch_losses(self, terms):
        """``(endogenous loss, exogenous loss)`` of :meth:`loss_terms`' ``terms``, as the released
        per-branch update weighs them (both hold the joint image term)."""
        cfg = self.config
        image = -cfg.image_scale * terms[self.observation_term]
        endogenous = (cfg.kl_scale * terms["kl_endo"] + image
                      - cfg.reward_scale * terms["reward_log_prob"])
        exogenous = (cfg.exo_kl_scale * terms["kl_exo"] + image
                     - cfg.exo_only_scale * terms.get("exo_only_log_prob", 0.0))
        return endogenous, exogenous

    def train_step(self, batch):
        """One update of both branches; returns ``(endogenous posterior (detached), metrics)``."""
        if self.exo_optimizer is None:
            with autocast(self.device, self.config.precision):
                loss, post, metrics = self.loss(batch)
            metrics.update(self.optimizer.step(loss))
            return detach_states(post), metrics
        with autocast(self.device, self.config.precision):
            terms, post, extras = self.loss_terms(batch)
            endogenous, exogenous = self.branch_losses(terms)
        metrics = {key: value.detach() for key, value in terms.items()}
        metrics.update(extras)
        metrics.update(step_together((self.optimizer, endogenous), (self.exo_optimizer, exogenous)))
        return detach_states(post), metrics

    # ----------------------------------------------------------------------------- imagination

    def imagine(self, policy, start, horizon, head=None):
        """Endogenous imagined rollout (see ``RSSM.imagine``): one ensemble head drawn per step."""
        return self.rssm.imagine(policy, start, horizon, head)

    def reward(self, imagination):
        """Predicted rewards ``(H, N)`` at the imagination's scored states (1..H, or 0..H-1 with
        ``imagined_reward_states="current"``)."""
        return self.reward_head(imagination.scored_features()).mean

    def disagreement(self, imagination, kind):
        """Ensemble disagreement ``u`` ``(H, N)`` of the endogenous prior heads at the scored
        states of an imagination."""
        return imagination_disagreement(self.rssm, imagination, kind)

    # ----------------------------------------------------------------------------- decoding

    @torch.no_grad()
    def decode_branches(self, endo_state, exo_state):
        """Image means of both branches: a ``JointImage`` (``mean``, ``mask``, ``endo_mean``, ``exo_mean``)
        plus the exogenous-only decoder's mean (None without that decoder), all ``(..., 64, 64, 3)``
        in ``[-0.5, 0.5]`` space. A state model gives a ``JointState`` (``mean``, ``gate``,
        ``endo_mean``, ``exo_mean``) and the exogenous-only mean, all ``(..., S)``."""
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

    def __init__(self, action_dim, config, device="cpu", seed=0, state_dim=None):
        super().__init__(action_dim, WorldModelConfig.from_config(
            config, reward_stop_grad=True, seed=seed, **world_model_overrides(config, state_dim)),
            device=device)

    def disagreement(self, imagination, kind):
        """Ensemble disagreement ``u`` ``(H, N)`` of the prior heads along an imagination."""
        return imagination_disagreement(self.rssm, imagination, kind)


def build_world_model(action_dim, config, device="cpu", seed=0, state_dim=None):
    """The separated model, or the single-branch ablation when ``config.separated`` is False
    (``state_dim``: the size of the state vectors of a model with ``observation="state"``)."""
    model_class = SeparatedWorldModel if config.separated else JointWorldModel
    return model_class(action_dim, config, device=device, seed=seed, state_dim=state_dim)
