"""Recurrent state-space model (RSSM): the latent dynamics of Dreamer, TIA, Offline DV2 and SeMOPO.

A latent state is a plain dict of tensors:

* Gaussian latent (Dreamer-v1 / TIA, ``classes=None``): ``deter (.., deter)``, ``stoch (.., stoch)``,
  ``mean (.., stoch)``, ``std (.., stoch)``;
* categorical latent (DreamerV2 / SeMOPO, ``classes=32``): ``deter``, ``stoch (.., stoch, classes)``
  one-hot samples, ``logits (.., stoch, classes)``.

One step of the prior (``img_step``)::

    x = ELU(Linear([stoch_{t-1}, a_{t-1}]))        # action-free mode: x = ELU(Linear(stoch_{t-1}))
    deter_t = GRU(x, deter_{t-1})                  # cell="dreamerv2": LayerNormGRUCell; "gru": standard
    stats = head_k(deter_t), head_k = Linear(hidden) -> ELU -> Linear(stats)   k in 0..ensemble-1

and of the posterior (``obs_step``): ``stats = Linear(ELU(Linear([deter_t, embed_t])))``.
With an ensemble (K prior heads on one shared GRU, Offline DV2 / SeMOPO / LOMPO) every step of the
prior draws one head uniformly at random, the same head for the whole batch; the draw uses this
module's ``torch.Generator`` when a ``seed`` is given, else the global torch RNG.

Sequence convention (datasets, DreamerV2): entry t holds o_t and the action a_{t-1} that led to it,
so ``observe`` feeds ``action[:, t]`` into the prior of step t. Where ``is_first[:, t]`` the previous
state and action are reset to zero before the step.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lqv_d4rl.networks.distributions import categorical_latent, gaussian_latent

ENSEMBLE_SIZE = 7  # prior heads of the ensemble RSSMs of Offline DV2, SeMOPO and LOMPO


CELLS = ("dreamerv2", "gru")


class LayerNormGRUCell(nn.Module):
    """GRU cell with layer normalization on the gates (DreamerV2's ``GRUCell(norm=True)``).

    ``parts = LayerNorm(W [x, h] + b)``; reset ``r = sigmoid``, candidate ``c = tanh(r * .)``,
    update ``u = sigmoid(. + update_bias)`` with update_bias -1; ``h' = u * c + (1 - u) * h``.

    The linear layer has a bias with or without the layer norm: DreamerV2's cell builds
    ``tfkl.Dense(3 * size, use_bias=norm is not None)`` with ``norm`` a bool, which is never None
    (danijar/dreamerv2, V-D4RL's ``offlinedv2`` and the released SeMOPO, ``common/nets.py``
    ``GRUCell``). The bias starts at zero, as Keras initializes it.
    """

    def __init__(self, input_dim, hidden_dim, update_bias=-1.0, layer_norm=True):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.update_bias = update_bias
        self.linear = nn.Linear(input_dim + hidden_dim, 3 * hidden_dim)
        nn.init.zeros_(self.linear.bias)
        self.norm = nn.LayerNorm(3 * hidden_dim) if layer_norm else nn.Identity()

    def forward(self, inputs, state):
        """One step: ``inputs (N, input_dim)``, ``state (N, hidden)`` -> new state ``(N, hidden)``."""
        parts = self.norm(self.linear(torch.cat([inputs, state.to(inputs.dtype)], -1)))
        reset, candidate, update = parts.chunk(3, -1)
        reset = torch.sigmoid(reset)
        candidate = torch.tanh(reset * candidate)
        update = torch.sigmoid(update + self.update_bias)
        return update * candidate + (1 - update) * state


class StandardGRUCell(nn.GRUCell):
    """The standard GRU cell of Dreamer-v1 and TIA (Keras ``GRUCell``, ``reset_after=True``; the
    same equations as ``torch.nn.GRUCell``)::

        r = sigmoid(W_r x + U_r h + b_r),  z = sigmoid(W_z x + U_z h + b_z)
        n = tanh(W_n x + b_n + r * (U_n h + b'_n)),  h' = (1 - z) * n + z * h

    It differs from :class:`LayerNormGRUCell` in where the reset gate acts (on the recurrent part
    only) and in its update gate (no -1 bias: a fresh cell keeps half of its state, not 73 %).
    Initialized as Keras does: Glorot-uniform input weights, orthogonal recurrent weights, zero
    biases. Takes and returns states like :class:`LayerNormGRUCell`.
    """

    def __init__(self, input_dim, hidden_dim):
        super().__init__(input_dim, hidden_dim)
        self.hidden_dim = hidden_dim
        with torch.no_grad():
            # Keras initializes each kernel as one matrix over the three gates
            bound = (6.0 / (input_dim + 3 * hidden_dim)) ** 0.5
            self.weight_ih.uniform_(-bound, bound)
            nn.init.orthogonal_(self.weight_hh)
            self.bias_ih.zero_()
            self.bias_hh.zero_()

    def forward(self, inputs, state):
        """One step: ``inputs (N, input_dim)``, ``state (N, hidden)`` -> new state ``(N, hidden)``."""
        return super().forward(inputs, state.to(inputs.dtype))


SCORED_STATES = ("next", "current")
"""Which imagined states rewards and penalties are read at (see :attr:`Imagination.scored`)."""


@dataclass
class Imagination:
    """A batch of imagined trajectories, time-major.

    Attributes:
        features: ``(H+1, N, F)`` features of the start state and the H imagined states.
        actions: ``(H, N, A)`` the action taken in state t, leading to state t+1.
        states: latent state dict with ``(H+1, N, ...)`` tensors (``None`` for non-RSSM dynamics).
        heads: the ensemble head used for each of the H steps (empty without an ensemble).
        scored: the H states that reward and penalty functions read (:meth:`scored_features`,
            :meth:`scored_states`): ``"next"``, states 1..H (the state each transition leads to),
            or ``"current"``, states 0..H-1 (DreamerV2, and so Offline DV2 and the released SeMOPO:
            the start state and the first H-1 imagined ones). The actor-critic sets it from its
            config (``BehaviorConfig.imagined_reward_states``).
    """

    features: torch.Tensor
    actions: torch.Tensor
    states: dict | None = None
    heads: list = field(default_factory=list)
    scored: str = "next"

    @property
    def horizon(self):
        """Number of imagined steps H."""
        return self.actions.shape[0]

    def scored_features(self):
        """``(H, N, F)`` features of the scored states."""
        return self.features[self._scored_steps()]

    def scored_states(self):
        """The scored states: a state dict of ``(H, N, ...)`` tensors."""
        if self.states is None:
            raise ValueError("the imagination has no latent states; produce it with RSSM.imagine")
        steps = self._scored_steps()
        return {key: value[steps] for key, value in self.states.items()}

    def _scored_steps(self):
        if self.scored not in SCORED_STATES:
            raise ValueError(f"scored must be one of {SCORED_STATES}, got {self.scored!r}")
        return slice(1, None) if self.scored == "next" else slice(None, -1)


class RSSM(nn.Module):
    """Recurrent state-space model with Gaussian or categorical latents and optional prior ensemble.

    Args:
        embed_dim: size of the observation embedding (``ConvEncoder.output_dim``).
        action_dim: size of the action vector (still required in action-free mode; ignored there).
        deter: GRU state size (200 in all four algorithms).
        stoch: Gaussian latent size (30 for TIA), or number of categorical groups (32).
        classes: ``None`` for a Gaussian latent, else classes per group (32 for DreamerV2 / SeMOPO).
        hidden: width of the input, posterior and prior-head layers (200).
        ensemble: number K of prior heads (1: no ensemble; ``ENSEMBLE_SIZE`` = 7 for Offline DV2,
            SeMOPO, LOMPO).
        min_std: lower bound of the Gaussian std (0.1, Dreamer-v1 / TIA).
        cell: ``"dreamerv2"`` (:class:`LayerNormGRUCell`, layer norm per ``layer_norm``: DreamerV2,
            SeMOPO, Offline DV2) or ``"gru"`` (:class:`StandardGRUCell`: Dreamer-v1, TIA).
        layer_norm: layer-normalize the gates of the ``"dreamerv2"`` cell.
        std_activation: Gaussian std as ``softplus(x) + min_std`` (Dreamer-v1 / TIA) or
            ``"sigmoid2"``: ``2 * sigmoid(x / 2) + min_std`` (DreamerV2's Gaussian option).
        action_free: the prior ignores actions entirely (SeMOPO's exogenous branch).
        seed: seeds the generator that draws ensemble heads; ``None`` uses the global torch RNG.
    """

    def __init__(self, embed_dim, action_dim, deter=200, stoch=30, classes=None, hidden=200,
                 ensemble=1, min_std=0.1, action_free=False, layer_norm=True, seed=None,
                 std_activation="softplus", cell="dreamerv2"):
        super().__init__()
        if ensemble < 1:
            raise ValueError(f"ensemble must be at least 1 (got {ensemble})")
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        if std_activation not in ("softplus", "sigmoid2"):
            raise ValueError(f"std_activation must be 'softplus' or 'sigmoid2', got {std_activation!r}")
        self.std_activation = std_activation
        self.embed_dim, self.action_dim = embed_dim, action_dim
        self.deter_dim, self.stoch_dim, self.classes = deter, stoch, classes
        self.ensemble, self.min_std, self.action_free = ensemble, min_std, action_free
        self.stoch_flat_dim = stoch * classes if classes else stoch
        self.feature_dim = deter + self.stoch_flat_dim
        stats_dim = self.stoch_flat_dim if classes else 2 * stoch
        input_dim = self.stoch_flat_dim + (0 if action_free else action_dim)
        self.img_in = nn.Sequential(nn.Linear(input_dim, hidden), nn.ELU())
        if cell == "gru":
            self.cell = StandardGRUCell(hidden, deter)
        else:
            self.cell = LayerNormGRUCell(hidden, deter, layer_norm=layer_norm)
        self.img_heads = nn.ModuleList(
            nn.Sequential(nn.Linear(deter, hidden), nn.ELU(), nn.Linear(hidden, stats_dim))
            for _ in range(ensemble)
        )
        self.obs_out = nn.Sequential(
            nn.Linear(deter + embed_dim, hidden), nn.ELU(), nn.Linear(hidden, stats_dim)
        )
        self.generator = None
        if seed is not None:
            self.seed_heads(seed)

    # ----------------------------------------------------------------------------------- states

    def seed_heads(self, seed):
        """(Re)seed the generator that draws ensemble heads during imagination."""
        self.generator = torch.Generator().manual_seed(int(seed))

    def initial(self, batch, device=None):
        """The all-zero state for ``batch`` sequences (also what ``is_first`` resets to)."""
        device = device or next(self.parameters()).device
        state = {"deter": torch.zeros(batch, self.deter_dim, device=device)}
        if self.classes:
            state["stoch"] = torch.zeros(batch, self.stoch_dim, self.classes, device=device)
            state["logits"] = torch.zeros(batch, self.stoch_dim, self.classes, device=device)
        else:
            state["stoch"] = torch.zeros(batch, self.stoch_dim, device=device)
            state["mean"] = torch.zeros(batch, self.stoch_dim, device=device)
            state["std"] = torch.ones(batch, self.stoch_dim, device=device)
        return state

    def features(self, state):
        """Concatenation of ``deter`` and the flattened ``stoch``: ``(..., feature_dim)``."""
        stoch = state["stoch"]
        if self.classes:
            stoch = stoch.flatten(-2)
        return torch.cat([state["deter"].to(stoch.dtype), stoch], -1)

    def dist(self, stats):
        """The latent distribution of a state (or of a stats dict with ``logits`` or ``mean``/``std``)."""
        if self.classes:
            return categorical_latent(stats["logits"])
        return gaussian_latent(stats["mean"], stats["std"])

    # ----------------------------------------------------------------------------------- steps

    def img_step(self, state, action, head=None, sample=True):
        """Prior step: ``p(s_t | s_{t-1}, a_{t-1})``.

        Args:
            state: previous state dict, tensors ``(N, ...)``.
            action: ``(N, action_dim)`` previous action (ignored when ``action_free``).
            head: ensemble head index; ``None`` draws one at random (see module docstring).
            sample: sample ``stoch``; ``False`` uses the mode (categorical) / mean (Gaussian).
        Returns:
            the prior state dict.
        """
        deter = self._deter_step(state, action)
        head = self.draw_head() if head is None else head
        stats = self._stats(self.img_heads[head](deter))
        return self._with_stoch({"deter": deter, **stats}, sample)

    def obs_step(self, prev_state, prev_action, embed, is_first=None, sample=True, head=None):
        """Posterior step ``q(s_t | s_{t-1}, a_{t-1}, o_t)``; returns ``(posterior, prior)``.

        Where ``is_first`` (``(N,)`` bool) is true the previous state and action are zeroed first.
        """
        if is_first is not None:
            prev_state, prev_action = self._reset(prev_state, prev_action, is_first)
        prior = self.img_step(prev_state, prev_action, head=head, sample=sample)
        hidden = torch.cat([prior["deter"].to(embed.dtype), embed], -1)
        stats = self._stats(self.obs_out(hidden))
        posterior = self._with_stoch({"deter": prior["deter"], **stats}, sample)
        return posterior, prior

    def observe(self, embed, action, is_first, state=None, head=None):
        """Filter a batch of sequences: ``embed (B, T, E)``, ``action (B, T, A)``, ``is_first (B, T)``.

        ``action[:, t]`` is the action that led to observation t (dataset convention). ``state``
        continues from a previous chunk; ``None`` starts from :meth:`initial`.
        Returns ``(posterior, prior)``: state dicts with ``(B, T, ...)`` tensors.
        """
        batch, length = embed.shape[:2]
        if action.shape[:2] != (batch, length) or is_first.shape[:2] != (batch, length):
            raise ValueError(
                f"observe needs embed, action and is_first with the same (batch, time) axes; got "
                f"{tuple(embed.shape)}, {tuple(action.shape)}, {tuple(is_first.shape)}"
            )
        state = self.initial(batch, embed.device) if state is None else state
        posteriors, priors = [], []
        for t in range(length):
            state, prior = self.obs_step(state, action[:, t], embed[:, t], is_first[:, t], head=head)
            posteriors.append(state)
            priors.append(prior)
        return stack_states(posteriors, dim=1), stack_states(priors, dim=1)

    def imagine(self, policy, start, horizon, head=None):
        """Roll the prior forward ``horizon`` steps from ``start`` (a state dict with ``(N, ...)``).

        ``policy(features) -> action (N, A)`` is called on the features of each state; the features
        it receives carry gradients, so detach them inside the policy if the actor should not
        backpropagate into its own input (DreamerV2 does). ``head=None`` draws a head per step.
        Returns an :class:`Imagination` (time-major, ``H + 1`` states including ``start``).
        """
        states, actions, heads = [start], [], []
        state = start
        for _ in range(horizon):
            action = policy(self.features(state))
            step_head = self.draw_head() if head is None else head
            state = self.img_step(state, action, head=step_head)
            states.append(state)
            actions.append(action)
            heads.append(step_head)
        stacked = stack_states(states, dim=0)
        return Imagination(self.features(stacked), torch.stack(actions), stacked, heads)

    def ensemble_prior_stats(self, prev_state, action):
        """All K heads' prior statistics for the step ``(s_{t-1}, a_{t-1}) -> s_t``.

        Returns a stats dict whose tensors have a leading ensemble axis: ``logits (K, N, G, C)`` or
        ``mean, std (K, N, stoch)``; plus the shared ``deter (N, deter)``. Feed it to the
        disagreement penalties in :mod:`lqv_d4rl.networks.losses`.
        """
        deter = self._deter_step(prev_state, action)
        return {"deter": deter, **self.head_stats(deter)}

    def head_stats(self, deter):
        """Prior statistics of every ensemble head for given GRU states ``deter (..., deter)``."""
        stats = [self._stats(head(deter)) for head in self.img_heads]
        return {key: torch.stack([item[key] for item in stats]) for key in stats[0]}

    def draw_head(self):
        """A uniformly drawn ensemble head index (0 without an ensemble)."""
        if self.ensemble == 1:
            return 0
        return int(torch.randint(self.ensemble, (), generator=self.generator))

    # ----------------------------------------------------------------------------------- helpers

    def _deter_step(self, state, action):
        stoch = state["stoch"]
        if self.classes:
            stoch = stoch.flatten(-2)
        inputs = stoch if self.action_free else torch.cat([stoch, action.to(stoch.dtype)], -1)
        return self.cell(self.img_in(inputs), state["deter"])

    def _stats(self, output):
        output = output.float()
        if self.classes:
            return {"logits": output.reshape(*output.shape[:-1], self.stoch_dim, self.classes)}
        mean, std = output.chunk(2, -1)
        if self.std_activation == "softplus":
            std = F.softplus(std)
        else:
            std = 2 * torch.sigmoid(std / 2)
        return {"mean": mean, "std": std + self.min_std}

    def _with_stoch(self, stats, sample):
        dist = self.dist(stats)
        if sample:
            stats["stoch"] = dist.rsample()
        elif self.classes:
            stats["stoch"] = dist.mode
        else:
            stats["stoch"] = dist.mean
        return stats

    def _reset(self, state, action, is_first):
        keep = (~is_first.bool()).float()
        initial = self.initial(keep.shape[0], keep.device)
        reset = {}
        for key, value in state.items():
            mask = keep.reshape(-1, *([1] * (value.dim() - 1)))
            reset[key] = value * mask + initial[key] * (1 - mask)
        return reset, action * keep.reshape(-1, 1).to(action.dtype)


def stack_states(states, dim):
    """Stack a list of state dicts along a new axis ``dim``."""
    return {key: torch.stack([state[key] for state in states], dim) for key in states[0]}


def map_states(function, state):
    """Apply ``function`` to every tensor of a state dict (e.g. ``detach``, flattening)."""
    return {key: function(value) for key, value in state.items()}


def flatten_states(state, dims=2):
    """Merge the first ``dims`` axes, e.g. posteriors ``(B, T, ...)`` -> ``(B*T, ...)`` start states."""
    return {key: value.reshape(-1, *value.shape[dims:]) for key, value in state.items()}


def detach_states(state):
    """A copy of the state dict with every tensor detached."""
    return map_states(torch.Tensor.detach, state)
