"""SAC on states (collectors.sac): losses pinned against hand-computed values, the log-probability
against torch.distributions, Polyak averaging, learning a small problem, checkpoints that continue
identically, seeding."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from collectors.sac import SACAgent, SACConfig, SACPolicy, TanhGaussianActor, TransitionReplay


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny networks are fastest on one thread (and a busy machine makes more threads crawl)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_config(**changes):
    return dataclasses.replace(SACConfig.smoke(), **{"units": 8, "batch_size": 4, **changes})


def constant_networks(agent, *, mean, log_std, q, target_q):
    """Zero every weight, so the actor outputs (mean, log_std) and each critic a constant."""
    with torch.no_grad():
        for module in (agent.actor, agent.critic, agent.target_critic):
            for parameter in module.parameters():
                parameter.zero_()
        agent.actor.net[-1].bias.copy_(torch.tensor([mean, log_std]))
        agent.critic.net[-1].bias.copy_(torch.tensor(q).view(2, 1, 1))
        agent.target_critic.net[-1].bias.copy_(torch.tensor(target_q).view(2, 1, 1))


def hand_log_prob(mean, log_std, noise):
    u = mean + math.exp(log_std) * noise
    gaussian = -0.5 * noise ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    return gaussian - math.log(1 - math.tanh(u) ** 2), math.tanh(u)


def test_critic_and_actor_losses_match_hand_computed_values():
    config = tiny_config(gamma=0.9, init_alpha=0.5)
    agent = SACAgent(config, state_dim=3, action_dim=1, seed=0)
    constant_networks(agent, mean=0.3, log_std=-0.5, q=[1.0, 2.0], target_q=[4.0, 3.0])
    batch = {"state": torch.zeros(2, 3), "action": torch.zeros(2, 1),
             "reward": torch.tensor([1.0, -1.0]), "next_state": torch.zeros(2, 3),
             "done": torch.tensor([0.0, 1.0])}
    noise = torch.randn((2, 1), generator=torch.Generator().manual_seed(123)).view(-1).tolist()
    agent.update_generator.manual_seed(123)
    targets = []
    for reward, done, n in zip([1.0, -1.0], [0.0, 1.0], noise):
        log_prob, _ = hand_log_prob(0.3, -0.5, n)
        targets.append(reward + 0.9 * (1 - done) * (min(4.0, 3.0) - 0.5 * log_prob))
    expected = sum(np.mean([(q - t) ** 2 for t in targets]) for q in (1.0, 2.0))
    assert agent.critic_loss(batch).item() == pytest.approx(expected, rel=1e-5)

    agent.update_generator.manual_seed(7)
    noise = torch.randn((2, 1), generator=torch.Generator().manual_seed(7)).view(-1).tolist()
    log_probs = [hand_log_prob(0.3, -0.5, n)[0] for n in noise]
    actor_loss, alpha_loss = agent.actor_and_alpha_losses(batch["state"])
    assert actor_loss.item() == pytest.approx(np.mean([0.5 * lp - 1.0 for lp in log_probs]),
                                              rel=1e-5)
    assert alpha_loss.item() == pytest.approx(-np.mean([0.5 * (lp - 1.0) for lp in log_probs]),
                                              rel=1e-5)


def test_log_probability_matches_a_tanh_transformed_normal():
    actor = TanhGaussianActor(4, 3, tiny_config())
    state = torch.randn(6, 4)
    noise = torch.randn(6, 3)
    action, log_prob = actor(state, noise)
    mean, log_std = actor.net(state).chunk(2, dim=-1)
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.clamp(-20, 2).exp()),
        [torch.distributions.transforms.TanhTransform()])
    pre_tanh = mean + log_std.clamp(-20, 2).exp() * noise
    reference = dist.base_dist.log_prob(pre_tanh).sum(-1) - \
        torch.distributions.transforms.TanhTransform().log_abs_det_jacobian(
            pre_tanh, action).sum(-1)
    torch.testing.assert_close(log_prob, reference, rtol=1e-4, atol=1e-4)
    assert torch.all(action.abs() <= 1)


def test_update_moves_the_target_critics_by_polyak_averaging():
    agent = SACAgent(tiny_config(tau=0.25), state_dim=3, action_dim=2, seed=1)
    replay = filled_replay(3, 2)
    target_before = [p.clone() for p in agent.target_critic.parameters()]
    agent.update(replay.sample(4))
    for old, new, online in zip(target_before, agent.target_critic.parameters(),
                                agent.critic.parameters()):
        torch.testing.assert_close(new, 0.75 * old + 0.25 * online)


def filled_replay(state_dim, action_dim, episodes=3, length=11, seed=0):
    rng = np.random.default_rng(seed)
    replay = TransitionReplay(state_dim, action_dim, episodes * length, seed=seed)
    for _ in range(episodes):
        replay.add_episode({"state": rng.normal(size=(length, state_dim)),
                            "action": rng.uniform(-1, 1, (length, action_dim)),
                            "reward": rng.random(length), "discount": np.ones(length)})
    return replay


def test_replay_pairs_each_state_with_the_next_inside_an_episode():
    replay = TransitionReplay(1, 1, 10, seed=0)
    replay.add_episode({"state": [[0.0], [1.0], [2.0]], "action": [[0.0], [0.1], [0.2]],
                        "reward": [0.0, 1.0, 2.0], "discount": [1.0, 1.0, 0.0]})
    replay.add_episode({"state": [[10.0], [11.0]], "action": [[0.0], [0.5]],
                        "reward": [0.0, 5.0], "discount": [1.0, 1.0]})
    assert len(replay) == 3
    batch = replay.sample(64)
    pairs = {(s, n, a, r, d) for s, n, a, r, d in zip(
        batch["state"][:, 0].tolist(), batch["next_state"][:, 0].tolist(),
        np.round(batch["action"][:, 0].double().numpy(), 3).tolist(), batch["reward"].tolist(),
        batch["done"].tolist())}
    assert pairs == {(0.0, 1.0, 0.1, 1.0, 0.0), (1.0, 2.0, 0.2, 2.0, 1.0),
                     (10.0, 11.0, 0.5, 5.0, 0.0)}


def test_sac_learns_a_contextual_bandit():
    """Reward 1 - (a - s/2)^2 for a state s in [-1, 1], no bootstrapping: the deterministic action
    must move from its random start to about s/2."""
    config = tiny_config(units=32, batch_size=64, gamma=0.0, actor_lr=3e-3, critic_lr=3e-3,
                         alpha_lr=3e-3, init_alpha=0.05)
    agent = SACAgent(config, state_dim=1, action_dim=1, seed=0)
    rng = np.random.default_rng(0)
    states = rng.uniform(-1, 1, (2001, 1))
    actions = rng.uniform(-1, 1, (2001, 1))
    # One long "episode": transition t is (state[t], action[t + 1], reward[t + 1]).
    rewards = np.zeros(2001)
    rewards[1:] = 1 - (actions[1:, 0] - states[:-1, 0] / 2) ** 2
    replay = TransitionReplay(1, 1, 2000, seed=0)
    replay.add_episode({"state": states, "action": actions, "reward": rewards,
                        "discount": np.ones(2001)})
    probe = np.linspace(-0.9, 0.9, 7)

    def error():
        return np.mean([abs(agent.act([s], deterministic=True)[0] - s / 2) for s in probe])

    before = error()
    for _ in range(400):
        agent.update(replay.sample(64))
    assert before > 0.15 and error() < 0.08


def test_a_saved_agent_continues_exactly(tmp_path):
    replay = filled_replay(3, 2)
    agent = SACAgent(tiny_config(), state_dim=3, action_dim=2, seed=2)
    for _ in range(3):
        agent.update(replay.sample(4))
    agent.save(tmp_path / "agent.pt")
    rng_state = replay.rng.bit_generator.state
    for _ in range(3):
        agent.update(replay.sample(4))
    resumed = SACAgent.load(tmp_path / "agent.pt")
    replay.rng.bit_generator.state = rng_state
    for _ in range(3):
        resumed.update(replay.sample(4))
    for a, b in zip(agent.actor.parameters(), resumed.actor.parameters()):
        assert torch.equal(a, b)
    assert resumed.alpha == agent.alpha and resumed.updates == 6


def test_same_seed_same_agent_and_snapshots_act_like_their_agent(tmp_path):
    a = SACAgent(tiny_config(), 5, 2, seed=3)
    b = SACAgent(tiny_config(), 5, 2, seed=3)
    c = SACAgent(tiny_config(), 5, 2, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.actor.parameters(), b.actor.parameters()))
    assert not torch.equal(a.actor.net[0].weight, c.actor.net[0].weight)
    a.save_actor(tmp_path / "actor.pt")
    snapshot = SACPolicy.load(tmp_path / "actor.pt")
    state = np.arange(5, dtype=np.float32)
    for deterministic in (True, False):
        expected = a.act(state, deterministic=deterministic,
                         generator=torch.Generator().manual_seed(0))
        got = snapshot.act(state, deterministic=deterministic,
                           generator=torch.Generator().manual_seed(0))
        assert np.array_equal(expected, got)


def test_a_checkpoint_of_another_kind_is_refused(tmp_path):
    torch.save({"format": "something-else"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not an lqv-d4rl SAC checkpoint"):
        SACAgent.load(tmp_path / "x.pt")
    SACAgent(tiny_config(), 3, 1).save(tmp_path / "agent.pt")
    with pytest.raises(ValueError, match="not an lqv-d4rl SAC snapshot"):
        SACPolicy.load(tmp_path / "agent.pt")
