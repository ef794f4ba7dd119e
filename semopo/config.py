"""All settings of a SeMOPO run in one dataclass, with the presets ``smoke``, ``paper`` and ``released``.

Sources: Wan et al., "SeMOPO: Learning High-quality Model and Policy from Low-quality Offline Visual
Datasets", ICML 2024 (Sec. 3.3, Sec. 4.3, Appendix D) and the released TensorFlow code (built on
V-D4RL's Offline DV2 / DreamerV2; its ``configs.yaml`` ``dmc_vision`` block and README command).
Where the two disagree the field's docstring names both; the defaults follow the paper, and the
``released`` preset switches to what the released command actually runs.
"""

from dataclasses import asdict, dataclass, fields, replace

from lqv_d4rl.algorithms import ConfigError

SAMPLING_MODES = ("conservative", "conservative_policy", "return_curriculum", "random")
PENALTIES = ("semopo_paper", "semopo_code", "lompo")
PRECISIONS = ("float32", "bfloat16", "float16")


@dataclass
class SeMOPOConfig:
    """Hyperparameters of SeMOPO (defaults: the paper's Appendix D unless a field says otherwise)."""

    # ----------------------------------------------------------------------- data and sampling
    batch_size: int = 64
    """Sequences per batch (Appendix D: 64)."""
    seq_len: int = 50
    """Entries per sequence (Appendix D: 50)."""
    sampling: str = "conservative"
    """Sampler of the world-model phase: ``conservative`` (paper Sec. 3.3: trajectories ordered by
    behaviour policy and time; model update m trains on the first min(m * conservative_pace, n) of
    the n trajectories, then on all), ``conservative_policy`` (each batch from one of the first
    min(m, n) behaviour policies: an earlier reading of the paper), ``return_curriculum`` (the
    released code: a growing prefix of the episodes sorted by return) or ``random`` (the ablation
    of Sec. 4.3)."""
    conservative_pace: float = 1.0
    """``conservative``: trajectories added to the sampled set per model update. The paper's
    "j <= min(m, n)" with one minibatch per epoch (Algorithm 1, App. D) is 1."""
    curriculum_steps: int | None = None
    """``return_curriculum``: the released code's growth horizon (its ``offline_model_train_steps``,
    25,001): the prefix grows by max(int(E / (curriculum_steps / 100)), 1) episodes every 100
    updates. ``conservative_policy``: updates after which every policy is open. ``None`` uses
    ``model_steps``."""
    replicate_off_by_one: bool = False
    """``return_curriculum`` only: cap the prefix at E - 1, so the best-return episode is never
    sampled, as the released code does."""
    unique_returns: bool = False
    """``return_curriculum`` only: keep one episode per distinct return (the last), as the released
    code's ``dict(zip(returns, episodes))`` does (it drops e.g. all but one of hopper's many
    zero-return episodes)."""
    policy_sampling: str = "random"
    """Sampler of the policy phase, whose batches only supply imagination start states. A
    curriculum mode stays frozen where the model phase ended (the released code keeps sampling its
    final prefix); the paper does not say, so the default samples uniformly."""

    # ----------------------------------------------------------------------- world model
    separated: bool = True
    """Separated world model (endogenous + exogenous branch). ``False`` is SeMOPO's joint-model
    ablation (Sec. 4.3): one branch that models the whole image, with SeMOPO's stop-gradient reward
    head and everything else unchanged. It is not Offline DV2, whose reward and image gradients
    shape the latent (``lqv-d4rl train offline_dv2``)."""
    depth: int = 48
    """CNN channel multiplier of encoders and decoders (Appendix D: 48)."""
    deter: int = 200
    """GRU state size of each RSSM (Appendix D / ``dmc_vision``: 200)."""
    stoch: int = 32
    """Categorical latent groups (32)."""
    classes: int = 32
    """Classes per group (32)."""
    hidden: int = 200
    """Width of the RSSM's input, posterior and prior-head layers (``dmc_vision``: 200)."""
    ensemble: int = 7
    """Prior heads of the endogenous ensemble RSSM (K = 7); one head is drawn per step."""
    exo_ensemble: int = 7
    """Prior heads of the exogenous RSSM. The released code builds both branches from the same
    ``EnsembleRSSM`` config (7 heads); the heads also give the exogenous uncertainty of Fig. 2 / 8."""
    units: int = 400
    """Width of the reward, actor and critic MLPs (Appendix D: dense 400)."""
    reward_layers: int = 4
    """Hidden layers of the reward MLP (4 x 400, ELU); it reads stop-gradient endogenous features."""
    kl_balance: float = 0.8
    """KL balancing: share of the KL gradient that trains the prior (0.8)."""
    free_nats: float = 1.0
    """Free nats, applied to the batch-mean KL of each branch (1.0)."""
    kl_scale: float = 1.0
    """Weight of KL(q~(s+) || T~(s+)), the endogenous KL."""
    exo_kl_scale: float = 1.0
    """Weight of KL(q-(s-) || T-(s-)), the exogenous KL (released ``disen_scales.kl_disen``: 1.0)."""
    image_scale: float = 1.0
    """Weight of the joint-image log-likelihood log U(o | s+, s-)."""
    reward_scale: float = 1.0
    """Weight of the reward log-likelihood (it only trains the reward head)."""
    exo_only_scale: float = 1.5
    """Weight of the exogenous-only image log-likelihood log p(o | s-) in the exogenous branch's loss.
    Not in the paper's ELBO; the released code adds it (TIA's "disen_only" term) with
    ``disen_scales.disen_only`` 1.5 (walker, cheetah) or 2.0 (hopper) - and multiplies by that scale
    twice, so it effectively runs 2.25 / 4.0 (see the ``released`` preset). 0 drops the term and
    the decoder (the paper's ELBO alone)."""
    model_lr: float = 6e-5
    """Adam learning rate of the world model: 6e-5 in the paper's Appendix D, 3e-4 in the released
    ``dmc_vision`` config that the README command runs."""
    eps: float = 1e-5
    """Adam epsilon of every optimizer: world model, actor and critic (DreamerV2: 1e-5)."""
    clip: float = 100.0
    """Global gradient-norm clip of every optimizer (100)."""
    model_steps: int = 25_000
    """World-model updates before policy learning starts (App. D: 25,000; the released loop runs
    251 blocks of 100, i.e. 25,100, while its counter is below 25,001)."""

    # ----------------------------------------------------------------------- policy
    horizon: int = 5
    """Imagination horizon (5), from all B x T posterior states of a batch."""
    gamma: float = 0.99
    """Discount (0.99)."""
    lambda_: float = 0.95
    """lambda of the TD(lambda) value targets (0.95)."""
    actor_entropy: float = 1e-4
    """Actor entropy bonus (``dmc_vision``: 1e-4)."""
    actor_lr: float = 8e-5
    """Adam learning rate of the actor (8e-5)."""
    critic_lr: float = 8e-5
    """Adam learning rate of the critic (8e-5)."""
    actor_layers: int = 4
    """Hidden layers of the actor MLP (4 x ``units``)."""
    critic_layers: int = 4
    """Hidden layers of the critic MLP (4 x ``units``)."""
    slow_critic_every: int = 100
    """Updates between copies of the critic into the slow (target) critic (100)."""
    policy_steps: int = 100_000
    """Actor-critic updates after the model phase (100,000; ``--steps 100000`` in the README)."""
    penalty: str = "semopo_paper"
    """Uncertainty u of the penalized reward r - lambda * u: ``semopo_paper`` (Eq. 2: sum over heads of
    the squared deviation of each head's class probabilities from their mean), ``semopo_code`` (the
    released ``meandis``: mean over heads of the Frobenius norm of that deviation) or ``lompo``
    (LOMPO's std over heads of the log-likelihood of the imagined latent; Sec. 4.3 ablation)."""
    penalty_lambda: float = 10.0
    """lambda of r - lambda * u. The paper states 10; the released command runs the config default
    ``offline_lmbd`` 5 (its ``--offline_lmbd_cons 10`` only matters with ``offline_tune_lmbd``)."""

    # ----------------------------------------------------------------------- running
    precision: str = "bfloat16"
    """Mixed precision on CUDA (``float16`` is what the original ran, with loss scaling;
    ``bfloat16`` needs none and is native on current GPUs); CPU always computes in float32."""
    log_every: int = 100
    """Updates between rows of the metrics log (means over the updates since the last row)."""
    checkpoint_every: int = 5_000
    """Updates between checkpoints (a checkpoint is also written at the end of each phase)."""
    eval_episodes: int = 10
    """Evaluation episodes after training (the released code evaluates 10)."""
    eval_max_steps: int | None = None
    """Cap on agent steps per evaluation episode (``None``: the full 500; small for smoke tests)."""

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Raise :class:`ConfigError` for a value that cannot work."""
        _choice("sampling", self.sampling, SAMPLING_MODES)
        _choice("policy_sampling", self.policy_sampling, SAMPLING_MODES)
        _choice("penalty", self.penalty, PENALTIES)
        _choice("precision", self.precision, PRECISIONS)
        for name in ("batch_size", "seq_len", "depth", "deter", "stoch", "classes", "hidden",
                     "ensemble", "exo_ensemble", "units", "reward_layers", "horizon",
                     "actor_layers", "critic_layers", "slow_critic_every", "log_every",
                     "checkpoint_every", "eval_episodes"):
            _positive_int(name, getattr(self, name))
        for name in ("model_steps", "policy_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        if self.ensemble < 2 and self.penalty_lambda != 0:
            raise ConfigError(
                f"the disagreement penalty needs an ensemble of at least 2 prior heads (ensemble="
                f"{self.ensemble}); raise ensemble or set penalty_lambda=0"
            )
        for name in ("penalty_lambda", "kl_scale", "exo_kl_scale", "image_scale", "reward_scale",
                     "exo_only_scale", "free_nats", "actor_entropy"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("kl_balance", "gamma", "lambda_"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        for name in ("model_lr", "actor_lr", "critic_lr", "eps", "clip"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not self.conservative_pace > 0:
            raise ConfigError(f"conservative_pace must be > 0, got {self.conservative_pace!r}")
        if self.curriculum_steps is not None:
            _positive_int("curriculum_steps", self.curriculum_steps)
        if self.eval_max_steps is not None:
            _positive_int("eval_max_steps", self.eval_max_steps)

    @property
    def effective_curriculum_steps(self):
        """The curriculum horizon of ``return_curriculum`` / ``conservative_policy``
        (``curriculum_steps`` or ``model_steps``)."""
        return self.curriculum_steps or max(1, self.model_steps)

    def to_dict(self):
        """A JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values):
        """Rebuild a config from :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown SeMOPO config field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def updated(self, **changes):
        """A copy with some fields changed (validated)."""
        unknown = sorted(set(changes) - {item.name for item in fields(self)})
        if unknown:
            raise ConfigError(f"unknown SeMOPO config field(s) {unknown}")
        return replace(self, **changes)


def _choice(name, value, choices):
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


PRESETS = {
    # Appendix D of the paper: the dataclass defaults.
    "paper": {},
    # What the released README command runs (configs.yaml dmc_vision + command-line flags).
    "released": {
        "sampling": "return_curriculum",
        "curriculum_steps": 25_001,
        "model_steps": 25_100,
        "replicate_off_by_one": True,
        "unique_returns": True,
        "policy_sampling": "return_curriculum",
        "model_lr": 3e-4,
        "penalty": "semopo_code",
        "penalty_lambda": 5.0,
        # disen_only 1.5, applied twice by the released code; hopper's command uses 2.0 (-> 4.0)
        "exo_only_scale": 2.25,
        "per_task": {"hopper_hop": {"exo_only_scale": 4.0}},
        "precision": "float16",
    },
    # Tiny networks and few steps: minutes on a laptop CPU; for tests and for trying the pipeline.
    "smoke": {
        "batch_size": 8,
        "seq_len": 16,
        "depth": 8,
        "deter": 32,
        "stoch": 8,
        "classes": 8,
        "hidden": 32,
        "ensemble": 3,
        "exo_ensemble": 3,
        "units": 64,
        "reward_layers": 2,
        "actor_layers": 2,
        "critic_layers": 2,
        "model_lr": 1e-3,
        "actor_lr": 3e-4,
        "critic_lr": 3e-4,
        "model_steps": 200,
        "policy_steps": 100,
        "slow_critic_every": 20,
        "log_every": 20,
        "checkpoint_every": 100,
        "eval_episodes": 2,
        "precision": "float32",
    },
}
"""Named configurations: field overrides on top of the defaults."""


def preset(name, *, task=None, **overrides):
    """The config of preset ``name`` (``smoke``, ``paper``, ``released``) for ``task``, with
    ``overrides`` applied."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    values = {key: value for key, value in PRESETS[name].items() if key != "per_task"}
    values.update(PRESETS[name].get("per_task", {}).get(task, {}))
    return SeMOPOConfig(**{**values, **overrides})
