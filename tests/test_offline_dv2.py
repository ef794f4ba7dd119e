"""Offline DV2: the penalty on a hand-built ensemble, one head per step, reward gradients into the
latent (unlike SeMOPO), learning on toy dynamics, resume equality and the command line.

Networks are tiny and everything runs on one CPU thread.
"""

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import EVALUABLE_PROVENANCE, write_tiny_dataset

import semopo
from baselines import offline_dv2
from baselines.offline_dv2 import OfflineDV2Agent, OfflineDV2Config
from lqv_d4rl.algorithms import ConfigError
from lqv_d4rl.dataset import load_dataset
from lqv_d4rl.networks import ActorCritic, BehaviorConfig, Imagination, state_disagreement
from lqv_d4rl.runs import Run, read_metrics
from lqv_d4rl.synthetic import noise_batch

torch.set_num_threads(1)

TINY = dict(batch_size=4, seq_len=8, depth=4, deter=16, stoch=4, classes=4, hidden=16,
            ensemble=3, units=32, reward_layers=1, actor_layers=1, critic_layers=1,
            model_lr=1e-3, actor_lr=3e-4, critic_lr=3e-4, precision="float32",
            slow_critic_every=2, log_every=1, checkpoint_every=10, eval_episodes=1,
            eval_max_steps=2)


def tiny_config(**changes):
    """An Offline DV2 config with tiny networks (changes override)."""
    return OfflineDV2Config(**{**TINY, **changes})


def tiny_dataset(folder, **options):
    """A tiny walker_walk dataset of noise images whose evaluation env is the procedural one."""
    return load_dataset(write_tiny_dataset(folder / "walker_walk-medrep",
                                           provenance=EVALUABLE_PROVENANCE, **options))


# ----------------------------------------------------------------------------------------------
# The penalty and the ensemble
# ----------------------------------------------------------------------------------------------

HAND_LOGITS = torch.tensor([
    [[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 0.5, 0.0], [0.0, 3.0, 0.0, 0.0]],
    [[0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.5, 0.0], [0.0, 0.0, 3.0, 0.0]],
    [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0], [-1.0, 1.0, 0.5, 0.0], [3.0, 0.0, 0.0, 0.0]],
])  # (K=3 heads, G=4 groups, C=4 classes)


def hand_built_agent(**changes):
    """An agent whose K prior heads output the fixed logits above, whatever their input."""
    torch.manual_seed(0)
    agent = OfflineDV2Agent(6, tiny_config(**changes))
    with torch.no_grad():
        for head, logits in zip(agent.world_model.rssm.img_heads, HAND_LOGITS):
            head[-1].weight.zero_()
            head[-1].bias.copy_(logits.flatten())
    return agent


def imagine_from_a_batch(agent, horizon=3):
    """An imagined rollout of zero actions from the last posterior state of a noise batch."""
    model = agent.world_model
    post, _ = model.observe(noise_batch(4, 8, 6))
    start = {key: value[:, -1] for key, value in post.items()}
    return model.imagine(lambda features: torch.zeros(features.shape[0], 6), start, horizon)


def test_meandis_penalty_equals_its_formula_on_a_hand_built_ensemble():
    agent = hand_built_agent(penalty="meandis", penalty_lambda=10.0)
    total, reward, penalty = agent.penalized_reward(imagine_from_a_batch(agent))
    probs = torch.softmax(HAND_LOGITS.double(), -1).numpy()  # (K, G, C)
    deviation = probs - probs.mean(0)
    expected = np.mean([np.linalg.norm(d, "fro") for d in deviation])  # mean of Frobenius norms
    assert penalty.shape == (3, 4)
    np.testing.assert_allclose(penalty.detach().numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(total.detach().numpy(), (reward - 10.0 * penalty).detach().numpy(),
                               rtol=1e-6)


def test_log_prob_ens_penalty_equals_its_formula_on_a_hand_built_ensemble():
    agent = hand_built_agent(penalty="log_prob_ens", penalty_lambda=2.0)
    imagination = imagine_from_a_batch(agent)
    _, _, penalty = agent.penalized_reward(imagination)
    log_probs = torch.log_softmax(HAND_LOGITS.double(), -1).numpy()  # (K, G, C)
    samples = imagination.states["stoch"][1:].detach().double().numpy()  # (H, N, G, C) one-hot
    per_head = np.einsum("kgc,hngc->khn", log_probs, samples)
    np.testing.assert_allclose(penalty.detach().numpy(), per_head.std(0), rtol=1e-5)


def test_one_prior_head_is_drawn_per_step_for_the_whole_batch():
    agent = hand_built_agent()
    _, prior = agent.world_model.observe(noise_batch(4, 8, 6))
    used = []
    for t in range(8):
        logits = prior["logits"][:, t]  # (B, G, C)
        matches = [k for k in range(3) if torch.allclose(logits, HAND_LOGITS[k].expand_as(logits))]
        assert len(matches) == 1, f"step {t}: the batch does not share one head"
        used.append(matches[0])
    assert len(set(used)) > 1  # a fresh draw per step, not one head for the whole sequence
    assert len(imagine_from_a_batch(agent, horizon=4).heads) == 4


def test_reward_and_image_gradients_reach_the_latent_in_offline_dv2_but_not_in_semopo():
    batch = noise_batch(4, 8, 6)
    only = {"reward": dict(kl_scale=0.0, image_scale=0.0),
            "image": dict(kl_scale=0.0, reward_scale=0.0)}
    for term, scales in only.items():
        torch.manual_seed(0)
        model = OfflineDV2Agent(6, tiny_config(**scales)).world_model
        loss, _, _ = model.loss(batch)
        loss.backward()
        for module in (model.encoder, model.rssm.obs_out):
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()), (
                f"{term} gradients do not reach the Offline DV2 latent")
    for separated in (False, True):
        torch.manual_seed(0)
        model = semopo.SeMOPOAgent(6, semopo.SeMOPOConfig(
            **TINY, exo_ensemble=3, separated=separated, kl_scale=0.0, exo_kl_scale=0.0,
            image_scale=0.0, exo_only_scale=0.0)).world_model
        loss, _, _ = model.loss(batch)
        loss.backward()
        for module in (model.encoder, model.rssm):
            assert all(p.grad is None or not p.grad.any() for p in module.parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0
                   for p in model.reward_head.parameters())  # the reward loss did flow somewhere


def test_config_sources_presets_and_errors():
    paper = offline_dv2.ALGORITHM.config("paper")
    assert (paper.ensemble, paper.horizon, paper.penalty) == (7, 5, "meandis")
    assert paper.penalty_lambda == 10.0
    assert (paper.model_steps, paper.policy_steps, paper.model_lr) == (25_000, 200_000, 3e-4)
    assert offline_dv2.ALGORITHM.config("semopo_steps").policy_steps == 100_000
    with pytest.raises(ConfigError, match="penalty"):
        OfflineDV2Config(penalty="max_var")
    with pytest.raises(ConfigError, match="ensemble"):
        OfflineDV2Config(ensemble=1)
    with pytest.raises(ConfigError, match="weight_decay"):
        OfflineDV2Config(weight_decay=1.0)


def test_weight_decay_shrinks_every_parameter_before_the_adam_step():
    # DreamerV2's Optimizer: grads taken and clipped, then var *= 1 - wd, then apply_gradients
    torch.manual_seed(0)
    plain = OfflineDV2Agent(6, tiny_config(weight_decay=0.0))
    torch.manual_seed(0)
    decayed = OfflineDV2Agent(6, tiny_config(weight_decay=0.1))
    initial = [p.detach().clone() for p in plain.world_model.parameters()]
    batch = noise_batch(4, 8, 6)
    for agent in (plain, decayed):
        torch.manual_seed(1)
        agent.train_model_step(batch)
    # the same gradients, so the same Adam step: after = 0.9 * before - step = plain - 0.1 * before
    for (name, a), b, w in zip(plain.world_model.named_parameters(),
                               decayed.world_model.parameters(), initial):
        torch.testing.assert_close(b, a - 0.1 * w, msg=name)
    behavior = decayed.behavior
    assert behavior.actor_opt.weight_decay == behavior.critic_opt.weight_decay == 0.1


def test_released_preset_reads_imagined_rewards_at_the_current_states():
    released = offline_dv2.ALGORITHM.config("released")
    assert (released.imagined_reward_states, released.model_steps, released.precision) == (
        "current", 25_100, "float16")
    assert offline_dv2.ALGORITHM.config("paper").imagined_reward_states == "next"
    for states, steps in (("next", slice(1, None)), ("current", slice(None, -1))):
        torch.manual_seed(0)
        agent = OfflineDV2Agent(6, tiny_config(imagined_reward_states=states, horizon=3))
        start = agent.start_states(noise_batch(4, 8, 6))
        imagination = agent.behavior.imagine(agent.world_model.imagine, start)
        _, reward, penalty = agent.penalized_reward(imagination)
        model = agent.world_model
        scored = {key: value[steps] for key, value in imagination.states.items()}
        torch.testing.assert_close(reward, model.reward_head(imagination.features[steps]).mean)
        torch.testing.assert_close(penalty, state_disagreement(model.rssm, scored, "semopo_code"))
    with pytest.raises(ConfigError, match="horizon"):
        tiny_config(imagined_reward_states="current", horizon=1)


# ----------------------------------------------------------------------------------------------
# Learning on toy dynamics
# ----------------------------------------------------------------------------------------------


class ToyDynamics:
    """Latent z' = 0.9 z + 0.5 a (features are z); reward prefers the action (0.6, -0.4); the
    'uncertainty' grows with the distance of z' from the origin, where the data would be."""

    def imagine(self, policy, start, horizon):
        states, actions = [start], []
        for _ in range(horizon):
            actions.append(policy(states[-1]))
            states.append(0.9 * states[-1] + 0.5 * actions[-1])
        return Imagination(torch.stack(states), torch.stack(actions))

    def reward(self, imagination):
        return -((imagination.actions - torch.tensor([0.6, -0.4])) ** 2).sum(-1)

    def disagreement(self, imagination, penalty):
        return 0.2 * (imagination.features[1:] ** 2).sum(-1)


def toy_agent(penalty_lambda):
    """An Offline DV2 agent whose world model is the toy dynamics above."""
    torch.manual_seed(0)
    config = tiny_config(horizon=5, units=32, actor_layers=2, critic_layers=2, actor_lr=3e-3,
                         critic_lr=3e-3, slow_critic_every=10, penalty_lambda=penalty_lambda)
    agent = OfflineDV2Agent(2, config)
    agent.world_model = ToyDynamics()
    agent.behavior = ActorCritic(2, 2, BehaviorConfig.from_config(config))
    return agent


def penalized_return(agent, start):
    """Undiscounted penalized return of the actor's mode over the horizon, mean over starts."""
    with torch.no_grad():
        imagination = agent.world_model.imagine(
            lambda z: agent.behavior.policy(z, sample=False), start, 5)
        total, _, penalty = agent.penalized_reward(imagination)
    return total.sum(0).mean().item(), penalty.mean().item()


def test_penalized_actor_critic_improves_the_imagined_return_on_toy_dynamics():
    start = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    outcomes = {}
    for penalty_lambda in (0.0, 2.0):
        agent = toy_agent(penalty_lambda)
        before, _ = penalized_return(agent, start)
        for _ in range(150):
            agent.behavior_step(torch.randn(64, 2))
        outcomes[penalty_lambda] = penalized_return(agent, start)
        assert outcomes[penalty_lambda][0] > before + 0.5, (penalty_lambda, before, outcomes)
        assert agent.policy_updates == 150
    # the penalty keeps the penalized agent nearer the data than the unpenalized one
    assert outcomes[2.0][1] < 0.8 * outcomes[0.0][1], outcomes


# ----------------------------------------------------------------------------------------------
# Runs: resume equality, the command line
# ----------------------------------------------------------------------------------------------


def train_in(folder, dataset, config, *, seed=0, stop_after=None, resume=False):
    """Train in a run folder as the platform does; returns the agent."""
    run = Run.open(folder, offline_dv2.ALGORITHM, config, dataset, seed=seed, resume=resume,
                   stop_after=stop_after)
    try:
        return offline_dv2.train(dataset, config, run)
    finally:
        run.close()


def test_an_interrupted_run_resumes_to_the_same_agent_and_metrics(tmp_path):
    dataset = tiny_dataset(tmp_path, length=12)
    config = tiny_config(model_steps=3, policy_steps=3)
    straight = train_in(tmp_path / "straight", dataset, config, seed=3)
    part = train_in(tmp_path / "split", dataset, config, seed=3, stop_after=4)
    assert (part.model_updates, part.policy_updates) == (3, 1)
    resumed = train_in(tmp_path / "split", dataset, config, seed=3, resume=True)
    assert (resumed.model_updates, resumed.policy_updates) == (3, 3)
    for get in (lambda a: a.world_model.state_dict(), lambda a: a.behavior.state_dict()):
        for key, value in get(straight).items():
            assert torch.equal(value, get(resumed)[key]), key

    def logged(run):
        return [row for row in read_metrics(tmp_path / run) if row["metric"] != "updates_per_second"]

    assert logged("split") == logged("straight")


def test_cli_trains_evaluates_and_analyses(tmp_path, monkeypatch):
    from lqv_d4rl.cli import main

    monkeypatch.setattr("baselines.uncertainty.STATES", 20)  # the analysis, on fewer states

    write_tiny_dataset(tmp_path / "root" / "walker_walk-medrep", provenance=EVALUABLE_PROVENANCE,
                       length=20)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "train", "offline_dv2", "walker_walk-medrep", "--preset", "smoke", "--root",
        str(tmp_path / "root"), "--out", str(out), "--batch-size", "4", "--seq-len", "8",
        "--model-steps", "2", "--policy-steps", "2", "--eval-episodes", "1",
        "--eval-max-steps", "2", "--penalty-lambda", "5"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads((out / "eval.json").read_text())
    assert evaluation["lengths"] == [2] and math.isfinite(evaluation["mean_return"])
    assert json.loads((out / "config.json").read_text())["config"]["penalty_lambda"] == 5.0
    assert (out / "state_uncertainty.png").stat().st_size > 0
    assert "Offline DV2" in (out / "state_uncertainty_summary.md").read_text()
    phases = {row["phase"] for row in read_metrics(out)}
    assert phases == {"model", "policy", "eval"}


def test_updates_never_wait_for_the_device():
    """On the ``meta`` device (a GPU's view, see lqv_d4rl.host_syncs) no update reads a value back."""
    from lqv_d4rl.host_syncs import count_host_syncs

    agent = OfflineDV2Agent(6, tiny_config(batch_size=2, seq_len=6), device="meta")
    batch = {key: torch.as_tensor(value).to("meta") for key, value in noise_batch(2, 6, 6).items()}
    for update in (agent.train_model_step, agent.train_policy_step):
        with count_host_syncs("meta") as syncs:
            update(batch)
        assert syncs.total == 0, syncs.where.most_common(3)
