"""BC: behaviour cloning of dataset actions from augmented frame stacks (V-D4RL's ``bcagent.py``).

The SeMOPO paper's "original BC" (Sec. 4) is V-D4RL's drqbc BC agent: the encoder and the actor
are trained together by ``MSE(a_sampled, a_data)``, where ``a_sampled`` is the actor's mean plus
clipped Gaussian noise (std on V-D4RL's linear schedule), with random-shift augmentation. Facts and
sources: ``reference/baselines.md`` section 1 (conglu1997/v-d4rl ``drqbc/bcagent.py``).

    lqv-d4rl train bc walker_walk-medium --preset paper --device cuda
"""

from dataclasses import dataclass

import torch.nn.functional as F

from lqv_d4rl.algorithms import Algorithm

from .core import Actor, PixelEncoder, random_shift, sample_clipped
from .model_free import (
    RESUMABLE_FIELDS, SMOKE, ActingNetwork, AgentBase, ModelFreeConfig, load_policy,
    train_model_free,
)


@dataclass
class BCConfig(ModelFreeConfig):
    """Behaviour cloning (defaults: V-D4RL ``algo=bc``; all fields are shared with the other
    model-free baselines, see :class:`baselines.model_free.ModelFreeConfig`)."""


class BCAgent(AgentBase):
    """Encoder + actor trained by the BC loss (one Adam over both; V-D4RL steps two Adams with the
    same learning rate, which is the same update)."""

    def __init__(self, action_dim, config, device):
        super().__init__(action_dim, config, device)
        self.encoder = PixelEncoder(3 * config.frame_stack, config.image_size,
                                    config.encoder_channels).to(device)
        self.actor = Actor(self.encoder.repr_dim, action_dim, config.feature_dim, config.units,
                           config.actor_layers).to(device)
        self.optimizer = self.adam("actor", [*self.encoder.parameters(),
                                             *self.actor.parameters()], config.actor_lr)

    def update(self, batch, generator):
        """One BC update on ``batch``; returns its metrics."""
        config = self.config
        obs = random_shift(batch["obs"], config.augment_pad, generator)
        with self.autocast():
            mean = self.actor(self.encoder(obs)).float()
        action = sample_clipped(mean, self.noise_std(), config.std_clip, generator)
        loss = F.mse_loss(action, batch["action"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.updates += 1
        return {"bc_loss": loss.detach()}

    def acting_network(self):
        """Encoder + actor mean."""
        return ActingNetwork(self.encoder, self.actor)


def train(dataset, config, run, device="cpu"):
    """Train BC on ``dataset`` in the run folder ``run`` (``ALGORITHM.train``)."""
    return train_model_free(dataset, config, run, device, BCAgent,
                            sampler_options={"nstep": 0}, postfix=("bc_loss",))


def load(run_dir, device="cpu"):
    """The evaluation policy of the BC run in ``run_dir``."""
    return load_policy(run_dir, BCAgent, BCConfig, "bc", device)


PRESETS = {
    "paper": {},
    "smoke": SMOKE,
}
"""``paper``: V-D4RL's BC (550k updates, 10 evaluation episodes); ``smoke``: tiny networks."""

ALGORITHM = Algorithm(
    name="bc",
    config_class=BCConfig,
    presets=PRESETS,
    train=train,
    load=load,
    summary="BC (V-D4RL): behaviour cloning of dataset actions from augmented frame stacks; "
            "the encoder is trained by the BC loss.",
    resumable_fields=RESUMABLE_FIELDS,
)
