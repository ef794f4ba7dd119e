"""One update of each model-free baseline equals one update of the reference implementation in
``benchmarks/bench_model_free.py`` (written the way V-D4RL's ``drqbc/`` writes BC, DrQ+BC and
DrQ+CQL, and the way the InfoGating author's code structures its update), from the same initial
weights, the same batch and the same random draws.

What differs is only how the numbers are computed (see ``baselines/core.py``):

* random shifts: uint8 crops by gathering vs ``grid_sample`` on floats, at the same integer
  shifts (grid_sample's sampling points fall on pixel centres, so the values agree to float
  rounding);
* the input scaling ``x / 255 - 0.5`` folded into the first convolution;
* features flattened in (H, W, C) vs (C, H, W) order: the reference's trunk weights are ours with
  their columns permuted (and Adam, being per parameter, keeps them so);
* one Adam over encoder and head vs two with the same learning rate (Adam is per parameter, so
  it is the same update); fused Adam vs the default implementation;
* CQL's candidate actions through one critic-trunk pass vs the repeated features; InfoGating's
  state part of the energy layer computed once per sample, its U-Net and encoder run on o_t and
  o_{t+k} in one batch.

Each reference takes its random numbers from a ``Draws`` whose generator is seeded like ours and
which draws in the order and shapes ours does, so both see the same augmentation shifts, action
noise, random actions, negatives and unmasked rows, by construction.

Two settings keep float rounding from hiding the comparison. Adam's eps is 1e-4 instead of 1e-8:
Adam's first step is ``lr * g / (|g| + eps)``, which at eps 1e-8 is ``lr * sign(g)`` even for
entries whose gradient is rounding noise (a sign flip there moves a weight by 2 lr); with 1e-4 the
step is proportional to such gradients. And the reference's U-Net (the same module class as ours)
runs in ours' channels_last layout: its GroupNorm-ReLU layers amplify the NCHW-vs-NHWC rounding of
the masks (~5e-6) to ~1e-3 of its gradients. With both, every parameter agrees to 3e-6 after a step
of 3e-4.
"""

import pytest
import torch
from conftest import load_benchmark_script

from baselines import bc, drq_bc, drq_cql, infogating

torch.set_num_threads(1)

ACTION_DIM = 3
TINY = {"batch_size": 6, "encoder_channels": 4, "feature_dim": 8, "units": 16, "actor_layers": 1,
        "std_decay_updates": 10, "eval_episodes": 1, "eps": 1e-4}
CONFIGS = {
    "bc": lambda: bc.BCConfig(**TINY),
    # tau 0.5 moves the target critic by half a step, far beyond the comparison's tolerance
    "drq_bc": lambda: drq_bc.DrQBCConfig(**TINY, critic_layers=1, tau=0.5),
    "drq_cql": lambda: drq_cql.DrQCQLConfig(**TINY, critic_layers=1, cql_random_actions=3,
                                            tau=0.5),
    # mask penalties heavier than the code's 0.1 and 1e-3, so that each term shows in the step
    "infogating": lambda: infogating.InfoGatingConfig(
        **TINY, mask_filters=8, mask_bottleneck=8, inverse_units=8, negatives=5, mask_blocks=3,
        mask_noise_updates=0, mask_penalty=0.5, mask_square_penalty=0.5),
}
AGENTS = {"bc": bc.BCAgent, "drq_bc": drq_bc.DrQBCAgent, "drq_cql": drq_cql.DrQCQLAgent,
          "infogating": infogating.InfoGatingAgent}


def load_benchmark():
    """``benchmarks/bench_model_free.py`` as a module."""
    return load_benchmark_script("bench_model_free")


BENCH = load_benchmark()


def make_reference(name, config, draws=None):
    """The benchmark's reference implementation of ``name`` for ``config``."""
    if name == "infogating":
        reference = BENCH.ReferenceInfoGating(config, ACTION_DIM, "cpu", draws)
        reference.unet.to(memory_format=torch.channels_last)  # ours' rounding (module docstring)
        return reference
    return BENCH.ReferenceDrQ(name, config, ACTION_DIM, "cpu", draws)


def reference_modules(reference):
    """The reference's networks by name (every parameter and buffer an update may change)."""
    names = (("unet", "encoder", "energy", "policy") if hasattr(reference, "unet") else
             ("encoder", "actor", "critic", "critic_target"))
    return {name: getattr(reference, name) for name in names if hasattr(reference, name)}


def noise_batch(seed=0):
    """A batch of 6 transitions of noise frames (frame stack 3, 64 px)."""
    generator = torch.Generator().manual_seed(seed)
    frames = lambda: torch.randint(0, 256, (6, 9, 64, 64), generator=generator,  # noqa: E731
                                   dtype=torch.uint8)
    return {"obs": frames(), "next_obs": frames(), "future_obs": frames(),
            "action": torch.rand(6, ACTION_DIM, generator=generator) * 1.8 - 0.9,
            "reward": torch.rand(6, generator=generator), "discount": torch.full((6,), 0.99)}


@pytest.mark.parametrize("name, changes", [
    ("bc", {}), ("drq_bc", {}), ("drq_cql", {}),
    ("infogating", {"warmup_updates": 0}), ("infogating", {"warmup_updates": 1}),
])
def test_one_update_equals_the_reference_update(name, changes):
    config = CONFIGS[name]()
    for field, value in changes.items():
        setattr(config, field, value)
    torch.manual_seed(0)
    agent = AGENTS[name](ACTION_DIM, config, "cpu")
    reference = make_reference(name, config, BENCH.Draws(torch.Generator().manual_seed(7)))
    reference.copy_weights_from(agent)
    before = {module: {key: value.clone() for key, value in network.state_dict().items()}
              for module, network in reference_modules(reference).items()}
    batch = noise_batch()
    agent.update(batch, torch.Generator().manual_seed(7))
    reference.update(batch)
    ours = make_reference(name, config)  # our updated weights, in the reference's layout
    ours.copy_weights_from(agent)
    expected, actual = reference_modules(ours), reference_modules(reference)
    for module, network in actual.items():
        for key, value in network.state_dict().items():
            torch.testing.assert_close(expected[module].state_dict()[key], value, rtol=0,
                                       atol=3e-6, msg=f"{module}.{key}")
        moved = max((value.float() - before[module][key].float()).abs().max().item()
                    for key, value in network.state_dict().items())
        assert moved > 1e-4, f"{module} did not move: the comparison would be empty"
