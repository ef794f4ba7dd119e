"""SeMOPO's released-code options: the per-branch optimizers with weight decay, and DreamerV2's
reading of imagined rewards at states 0..H-1; the ``released`` preset sets both.

Networks are tiny and everything runs on one CPU thread.
"""

import copy
import math

import pytest
import torch

import semopo
from lqv_d4rl.networks import state_disagreement
from lqv_d4rl.synthetic import noise_batch

torch.set_num_threads(1)

TINY = dict(batch_size=4, seq_len=8, depth=4, deter=16, stoch=4, classes=4, hidden=16,
            ensemble=3, exo_ensemble=3, units=32, reward_layers=1, actor_layers=1,
            critic_layers=1, model_lr=1e-3, actor_lr=3e-4, critic_lr=3e-4, precision="float32",
            slow_critic_every=2, log_every=5, checkpoint_every=10, eval_episodes=1,
            eval_max_steps=4)


def tiny_config(**changes):
    """A SeMOPO config with tiny networks (changes override)."""
    return semopo.SeMOPOConfig(**{**TINY, **changes})


def test_released_preset_selects_the_released_optimizers_and_reward_states():
    released = semopo.preset("released")
    assert (released.optimizer, released.weight_decay, released.clip) == ("per_branch", 1e-6, 100)
    assert released.imagined_reward_states == "current"
    paper = semopo.preset("paper")
    assert (paper.optimizer, paper.weight_decay, paper.imagined_reward_states) == ("joint", 0.0,
                                                                                   "next")
    for field, value in (("optimizer", "adamw"), ("imagined_reward_states", "previous"),
                         ("weight_decay", 1.0)):
        with pytest.raises(semopo.ConfigError, match=field):
            tiny_config(**{field: value})
    with pytest.raises(semopo.ConfigError, match="horizon"):
        tiny_config(imagined_reward_states="current", horizon=1)


def test_branch_optimizers_cover_the_released_modules():
    # model_opt: [encoder, rssm, joint_image_head, reward]; disen_model_opt: [disen_encoder,
    # disen_rssm, joint_image_head, disen_only_image_head]: the joint mask decoder is in both
    torch.manual_seed(0)
    model = semopo.SeparatedWorldModel(6, tiny_config(optimizer="per_branch"))
    ids = lambda *modules: {id(p) for m in modules for p in m.parameters()}  # noqa: E731
    endogenous = {id(p) for p in model.optimizer.parameters}
    exogenous = {id(p) for p in model.exo_optimizer.parameters}
    assert endogenous == ids(model.encoder, model.rssm, model.reward_head, model.decoder)
    assert exogenous == ids(model.exo_encoder, model.exo_rssm, model.decoder,
                            model.exo_only_decoder)
    assert endogenous & exogenous == ids(model.decoder)
    assert endogenous | exogenous == ids(model)
    joint = semopo.SeparatedWorldModel(6, tiny_config())
    assert joint.exo_optimizer is None
    assert {id(p) for p in joint.optimizer.parameters} == ids(joint)


def test_per_branch_update_clips_each_branch_and_decays_like_the_release():
    # eps 10 makes Adam's first step lr * g / (|g| + eps), so the clipping shows in the update; a
    # large exogenous-only weight puts the exogenous gradient norm far above the endogenous one
    lr, eps, decay = 0.1, 10.0, 0.01
    config = tiny_config(optimizer="per_branch", model_lr=lr, eps=eps, weight_decay=decay,
                         exo_only_scale=50.0)
    torch.manual_seed(0)
    model = semopo.SeparatedWorldModel(6, config)
    reference = copy.deepcopy(model)  # the same weights and head-draw generators
    batch = noise_batch(config.batch_size, config.seq_len, 6, 0)

    torch.manual_seed(1)  # the same latent samples in both forward passes
    terms, _, _ = reference.loss_terms(batch)
    losses = dict(zip(("model", "exo"), reference.branch_losses(terms)))
    groups = {"model": reference.endogenous_parameters(), "exo": reference.exogenous_parameters()}
    gradients = {name: torch.autograd.grad(losses[name], groups[name], retain_graph=True,
                                           allow_unused=True) for name in groups}
    norms = {name: torch.linalg.vector_norm(torch.stack(
        [torch.linalg.vector_norm(g) for g in grads if g is not None])).item()
        for name, grads in gradients.items()}
    assert norms["exo"] > 4 * norms["model"]
    clip = math.sqrt(norms["exo"] * norms["model"])  # one branch above the clip, one below
    model.optimizer.clip = model.exo_optimizer.clip = clip

    torch.manual_seed(1)
    _, metrics = model.train_step(batch)
    assert metrics["model_grad_norm"].item() == pytest.approx(norms["model"], rel=1e-5)
    assert metrics["exo_grad_norm"].item() == pytest.approx(norms["exo"], rel=1e-5)

    # by hand, in the release's order: model_opt, then disen_model_opt; each clips its own norm,
    # multiplies its variables by 1 - wd, then takes its (first) Adam step
    expected = {id(p): p.detach().clone() for p in reference.parameters()}
    for name in ("model", "exo"):
        scale = min(1.0, clip / (norms[name] + 1e-6))
        for parameter, gradient in zip(groups[name], gradients[name]):
            value = expected[id(parameter)] * (1 - decay)
            if gradient is not None:
                gradient = gradient * scale
                value = value - lr * gradient / (gradient.abs() + eps)
            expected[id(parameter)] = value
    names = dict(reference.named_parameters())
    for (name, after), before in zip(model.named_parameters(), reference.parameters()):
        assert names[name] is before
        torch.testing.assert_close(before.detach() - after.detach(),
                                   before.detach() - expected[id(before)],
                                   rtol=1e-4, atol=1e-6, msg=name)


def test_per_branch_agent_trains_and_checkpoints_both_optimizers():
    config = tiny_config(optimizer="per_branch", weight_decay=1e-6,
                         imagined_reward_states="current", horizon=3)
    torch.manual_seed(0)
    agent = semopo.SeMOPOAgent(6, config)
    batch = noise_batch(config.batch_size, config.seq_len, 6, 0)
    metrics = agent.train_model_step(batch)
    assert {"model_loss", "exo_loss", "model_grad_norm", "exo_grad_norm"} <= set(metrics)
    metrics = agent.train_policy_step(batch)
    assert all(math.isfinite(float(value)) for value in metrics.values())
    state = agent.state_dict()
    assert state["version"] == 2 and state["exo_optimizer"] is not None
    restored = semopo.SeMOPOAgent.from_state_dict(copy.deepcopy(state))
    saved = agent.world_model.exo_optimizer.optimizer.state_dict()["state"]
    loaded = restored.world_model.exo_optimizer.optimizer.state_dict()["state"]
    assert saved.keys() == loaded.keys()
    for index in saved:
        torch.testing.assert_close(saved[index]["exp_avg"], loaded[index]["exp_avg"])
    assert restored.behavior.actor_opt.weight_decay == 1e-6
    with pytest.raises(ValueError, match="version"):  # e.g. a checkpoint without the GRU bias
        restored.load_state_dict({**state, "version": 1})


@pytest.mark.parametrize("states, steps", [("next", slice(1, None)),
                                           ("current", slice(None, -1))])
def test_penalized_reward_is_read_at_the_configured_states(states, steps):
    config = tiny_config(imagined_reward_states=states, horizon=3, penalty="semopo_code")
    torch.manual_seed(0)
    agent = semopo.SeMOPOAgent(6, config)
    start = agent.start_states(noise_batch(config.batch_size, config.seq_len, 6, 0))
    imagination = agent.behavior.imagine(agent.world_model.imagine, start)
    _, reward, penalty = agent.penalized_reward(imagination)
    model = agent.world_model
    scored = {key: value[steps] for key, value in imagination.states.items()}
    torch.testing.assert_close(reward, model.reward_head(imagination.features[steps]).mean)
    torch.testing.assert_close(penalty, state_disagreement(model.rssm, scored, "semopo_code"))
