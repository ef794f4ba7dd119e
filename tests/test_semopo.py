"""SeMOPO: the separated world model's invariants, the penalty, conservative sampling and a smoke run.

The smoke run trains on a small dataset recorded from the real ``walker_walk`` environment with
two seeded random behaviour policies of different action spreads, written through ShardWriter.
Networks are tiny and everything runs on one CPU thread.
"""

import json
import math

import numpy as np
import pytest
import torch

import semopo
from conftest import WALKER_POLICIES, record_walker_dataset
from lqv_d4rl.dataset import load_dataset
from lqv_d4rl.networks import ensemble_predictions
from lqv_d4rl.evaluation import evaluate
from lqv_d4rl.runs import metric_series, read_metrics
from lqv_d4rl.synthetic import noise_batch
from semopo.analysis import reconstruction_rows, run_analysis, sampling_action_entropy

torch.set_num_threads(1)

TINY = dict(batch_size=4, seq_len=8, depth=4, deter=16, stoch=4, classes=4, hidden=16,
            ensemble=3, exo_ensemble=3, units=32, reward_layers=1, actor_layers=1,
            critic_layers=1, model_lr=1e-3, actor_lr=3e-4, critic_lr=3e-4, precision="float32",
            slow_critic_every=2, log_every=5, checkpoint_every=10, eval_episodes=1,
            eval_max_steps=4)
EPISODE_STEPS = 24  # agent steps per recorded episode (entries = steps + 1)
EPISODES_PER_POLICY = 2


def tiny_config(**changes):
    """A SeMOPO config with tiny networks (changes override)."""
    return semopo.SeMOPOConfig(**{**TINY, **changes})


def random_batch(config, action_dim=6, seed=0):
    """A sequence batch of noise images with the config's batch shape."""
    return noise_batch(config.batch_size, config.seq_len, action_dim, seed)


# ----------------------------------------------------------------------------------------------
# A small real dataset: walker_walk, two random policies of different action spreads
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def walker_dataset(tmp_path_factory):
    """A walker_walk dataset written through ShardWriter; the narrow policy is the earlier one."""
    return record_walker_dataset(tmp_path_factory.mktemp("semopo-data") / "walker_walk-medrep",
                                 episodes_per_policy=EPISODES_PER_POLICY, steps=EPISODE_STEPS)


# ----------------------------------------------------------------------------------------------
# The separated world model
# ----------------------------------------------------------------------------------------------


def test_reward_loss_does_not_move_the_world_model():
    torch.manual_seed(0)
    model = semopo.SeparatedWorldModel(6, tiny_config())
    terms, _, _ = model.loss_terms(random_batch(model.config))
    terms["reward_log_prob"].backward()
    representation = [model.encoder, model.rssm, model.exo_encoder, model.exo_rssm, model.decoder]
    for module in representation:
        for name, parameter in module.named_parameters():
            assert parameter.grad is None or not parameter.grad.any(), name
    head_grads = [p.grad for p in model.reward_head.parameters()]
    assert all(grad is not None for grad in head_grads) and any(g.abs().sum() > 0 for g in head_grads)


def test_exogenous_branch_ignores_actions():
    torch.manual_seed(0)
    model = semopo.SeparatedWorldModel(6, tiny_config())
    batch = random_batch(model.config)
    actions = torch.tensor(batch["action"], requires_grad=True)
    states = {}
    for name, action in (("data", actions), ("other", -actions.detach())):
        torch.manual_seed(1)  # same latent samples for both
        states[name], _ = model.observe_exogenous({**batch, "action": action})
    exo_features = model.exo_rssm.features(states["data"])
    assert torch.equal(exo_features, model.exo_rssm.features(states["other"]))
    (grad,) = torch.autograd.grad(exo_features.sum(), actions, allow_unused=True)
    assert grad is None
    # the endogenous branch, by contrast, does read the actions
    torch.manual_seed(1)
    endo, _ = model.observe({**batch, "action": actions})
    (grad,) = torch.autograd.grad(model.rssm.features(endo).sum(), actions)
    assert grad.abs().sum() > 0


def test_joint_ablation_is_a_single_branch_model():
    torch.manual_seed(0)
    agent = semopo.SeMOPOAgent(6, tiny_config(separated=False))
    assert not hasattr(agent.world_model, "exo_rssm")
    metrics = agent.train_model_step(random_batch(agent.config))
    assert math.isfinite(float(metrics["model_loss"]))
    metrics = agent.train_policy_step(random_batch(agent.config))
    assert math.isfinite(float(metrics["penalty"]))


# ----------------------------------------------------------------------------------------------
# The penalty on a hand-built ensemble
# ----------------------------------------------------------------------------------------------


HAND_LOGITS = torch.tensor([
    [[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 0.5, 0.0], [0.0, 3.0, 0.0, 0.0]],
    [[0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.5, 0.0], [0.0, 0.0, 3.0, 0.0]],
    [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0], [-1.0, 1.0, 0.5, 0.0], [3.0, 0.0, 0.0, 0.0]],
])  # (K=3 heads, G=4 groups, C=4 classes)


def hand_built_agent(penalty, penalty_lambda=10.0):
    """An agent whose K prior heads output the fixed logits above, whatever their input."""
    torch.manual_seed(0)
    agent = semopo.SeMOPOAgent(6, tiny_config(penalty=penalty, penalty_lambda=penalty_lambda))
    with torch.no_grad():
        for head, logits in zip(agent.world_model.rssm.img_heads, HAND_LOGITS):
            head[-1].weight.zero_()
            head[-1].bias.copy_(logits.flatten())
    return agent


def expected_penalty(kind):
    """The formulas written out with numpy on the hand-built probabilities."""
    probs = torch.softmax(HAND_LOGITS.double(), -1).reshape(3, -1).numpy()
    deviation = probs - probs.mean(0)
    if kind == "semopo_paper":  # Eq. 2: sum over heads of squared deviations
        return float(sum(np.dot(d, d) for d in deviation))
    return float(np.mean([np.sqrt(np.dot(d, d)) for d in deviation]))  # released: mean of norms


@pytest.mark.parametrize("kind", ["semopo_paper", "semopo_code"])
def test_penalty_equals_its_formula_on_a_hand_built_ensemble(kind):
    agent = hand_built_agent(kind, penalty_lambda=10.0)
    model = agent.world_model
    post, _ = model.observe(random_batch(agent.config))
    start = {key: value[:, -1] for key, value in post.items()}
    imagination = model.imagine(lambda f: torch.zeros(f.shape[0], 6), start, horizon=3)
    total, reward, penalty = agent.penalized_reward(imagination)
    assert penalty.shape == (3, agent.config.batch_size)
    np.testing.assert_allclose(penalty.detach().numpy(), expected_penalty(kind), rtol=1e-5)
    np.testing.assert_allclose(total.detach().numpy(),
                               (reward - 10.0 * expected_penalty(kind)).detach().numpy(), rtol=1e-5)


def test_penalty_is_zero_when_heads_agree():
    agent = hand_built_agent("semopo_code")
    with torch.no_grad():
        for head in agent.world_model.rssm.img_heads:
            head[-1].bias.copy_(HAND_LOGITS[0].flatten())
    stats = agent.world_model.rssm.head_stats(torch.zeros(2, agent.config.deter))
    predictions = ensemble_predictions(stats)
    assert torch.allclose(predictions[0], predictions[1])
    post, _ = agent.world_model.observe(random_batch(agent.config))
    start = {key: value[:, -1] for key, value in post.items()}
    imagination = agent.world_model.imagine(lambda f: torch.zeros(f.shape[0], 6), start, 2)
    assert agent.penalized_reward(imagination)[2].abs().max() < 1e-6


def test_policy_update_stays_finite_when_the_heads_agree_under_the_released_penalty():
    agent = hand_built_agent("semopo_code")
    with torch.no_grad():
        for head in agent.world_model.rssm.img_heads:
            head[-1].bias.copy_(HAND_LOGITS[0].flatten())
    metrics = agent.train_policy_step(random_batch(agent.config))
    assert float(metrics["penalty"]) == 0.0
    assert math.isfinite(float(metrics["actor_grad_norm"]))
    assert all(torch.isfinite(p).all() for p in agent.behavior.actor.parameters())


def test_every_window_starts_from_the_initial_state_with_a_zero_action():
    # as DreamerV2's replay (and so the released code) marks the first entry of each chunk
    torch.manual_seed(0)
    agent = semopo.SeMOPOAgent(6, tiny_config())
    batch = random_batch(agent.config)
    batch["is_first"][:, 0] = False  # a window that starts mid-episode
    other = {key: value.copy() for key, value in batch.items()}
    other["action"][:, 0] = -other["action"][:, 0]  # the stored previous action differs
    starts = []
    for item in (batch, other):
        torch.manual_seed(1)  # the same latent samples
        starts.append(agent.start_states(item)["deter"])
    assert torch.equal(*starts) and batch["is_first"][:, 0].all()


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


def test_presets_and_config_errors():
    paper = semopo.preset("paper")
    assert (paper.batch_size, paper.seq_len, paper.depth, paper.units) == (64, 50, 48, 400)
    assert (paper.model_lr, paper.actor_lr, paper.critic_lr, paper.clip) == (6e-5, 8e-5, 8e-5, 100)
    assert (paper.model_steps, paper.policy_steps, paper.horizon) == (25_000, 100_000, 5)
    assert (paper.penalty_lambda, paper.sampling, paper.penalty) == (10.0, "conservative",
                                                                      "semopo_code")
    released = semopo.preset("released")
    assert (released.model_lr, released.penalty_lambda, released.penalty) == (3e-4, 5.0, "semopo_code")
    assert semopo.SeMOPOConfig.from_dict(paper.to_dict()) == paper
    with pytest.raises(semopo.ConfigError, match="sampling"):
        semopo.SeMOPOConfig(sampling="best")
    with pytest.raises(semopo.ConfigError, match="ensemble"):
        semopo.SeMOPOConfig(ensemble=1)
    with pytest.raises(semopo.ConfigError, match="unknown preset"):
        semopo.preset("huge")


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_train_rejects_a_seed_that_is_not_a_non_negative_integer(seed, walker_dataset):
    with pytest.raises(semopo.ConfigError, match="seed"):
        semopo.train(walker_dataset, semopo.preset("smoke"), seed=seed)


@pytest.mark.parametrize("field, value", [("kl_balance", 1.5), ("gamma", 1.01),
                                          ("lambda_", -0.1), ("free_nats", -1.0),
                                          ("actor_entropy", -1e-4)])
def test_config_rejects_out_of_range_loss_and_return_settings(field, value):
    with pytest.raises(semopo.ConfigError, match=field):
        semopo.SeMOPOConfig(**{field: value})


# ----------------------------------------------------------------------------------------------
# Conservative sampling on a real mixed dataset
# ----------------------------------------------------------------------------------------------


def episodes_only_dataset(count, length=51):
    """The flat arrays a curriculum reads (episode table, returns, policies), no real frames."""
    from types import SimpleNamespace

    steps = count * length
    return SimpleNamespace(
        images=np.zeros((steps, 1, 1, 3), np.uint8), actions=np.zeros((steps, 6), np.float32),
        rewards=np.zeros(steps, np.float32), discounts=np.ones(steps, np.float32),
        is_first=np.zeros(steps, bool), is_last=np.zeros(steps, bool),
        is_terminal=np.zeros(steps, bool), episode_starts=np.arange(count) * length,
        episode_lengths=np.full(count, length), returns=np.linspace(0.0, 500.0, count),
        policy_ids=np.array([f"p{e // 10}" for e in range(count)]),
        policy_steps=np.arange(count) // 10)


@pytest.mark.parametrize("episodes", [200, 400])
def test_the_paper_curriculum_grows_through_the_whole_model_phase(episodes):
    from semopo.training import make_sampler

    config = semopo.preset("paper")
    sampler = make_sampler(episodes_only_dataset(episodes), config.sampling, config, 0)
    steps = config.model_steps
    at = [sampler.allowed_count(int(fraction * steps)) for fraction in (0.0, 0.5, 0.9, 0.95)]
    assert at[0] == 10 and at[0] < at[1] < at[2] < at[3] < episodes  # still growing at 90 %
    assert sampler.allowed_count(steps - 1) == episodes  # the whole dataset by the end
    literal = make_sampler(episodes_only_dataset(episodes), "conservative_literal", config, 0)
    assert literal.allowed_count(int(0.02 * steps)) == episodes  # the ablation: over at 2 %


def test_conservative_batches_have_lower_action_entropy(walker_dataset):
    dataset = load_dataset(walker_dataset)
    assert dataset.policies() == list(WALKER_POLICIES)
    config = tiny_config(batch_size=8, model_steps=400, conservative_initial=1)
    rows = sampling_action_entropy(dataset, config, batches=4, points=5, seed=0,
                                   modes=("conservative", "random"))
    mean = {mode: np.mean([row["entropy"] for row in rows if row["mode"] == mode])
            for mode in ("conservative", "random")}
    first = {row["mode"]: row["entropy"] for row in rows if row["step"] == 0}
    assert first["conservative"] < first["random"] - 0.2
    assert mean["conservative"] < mean["random"]


def test_action_entropy_analysis_samples_like_training_with_the_off_by_one(walker_dataset):
    # the released code never samples the best-return episode; the analysis must draw the same way
    dataset = load_dataset(walker_dataset)
    entropies = {}
    for replicate in (False, True):
        config = tiny_config(batch_size=8, model_steps=40, replicate_off_by_one=replicate)
        rows = sampling_action_entropy(dataset, config, batches=4, points=2, seed=0,
                                       modes=("return_curriculum",))
        entropies[replicate] = [row["entropy"] for row in rows]
    assert entropies[True] != entropies[False]


# ----------------------------------------------------------------------------------------------
# Smoke run: train, resume, evaluate, analyse, CLI
# ----------------------------------------------------------------------------------------------


def test_smoke_run_trains_evaluates_and_resumes(walker_dataset, tmp_path):
    dataset = load_dataset(walker_dataset)
    config = tiny_config(model_steps=20, policy_steps=4)
    torch.manual_seed(123)
    agent = semopo.train(dataset, config, seed=0, log_dir=tmp_path / "run")
    assert (agent.model_updates, agent.policy_updates) == (20, 4)
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    _, losses = metric_series(rows, "model", "model_loss")
    assert len(losses) == 4 and losses[-1] < losses[0]
    _, returns = metric_series(rows, "policy", "imagined_return")
    assert len(returns) == 1 and np.isfinite(returns).all()

    # a second run in the same folder refuses to overwrite it ...
    with pytest.raises(semopo.RunExistsError):
        semopo.train(dataset, config, seed=0, log_dir=tmp_path / "run")
    # ... and resuming with more policy steps continues where it stopped
    resumed = semopo.train(dataset, config.updated(policy_steps=6), seed=0,
                           log_dir=tmp_path / "run", resume=True)
    assert (resumed.model_updates, resumed.policy_updates) == (20, 6)
    for key, value in agent.world_model.state_dict().items():
        assert torch.equal(value, resumed.world_model.state_dict()[key]), key
    with pytest.raises(semopo.ResumeMismatchError, match="penalty_lambda"):
        semopo.train(dataset, config.updated(penalty_lambda=1.0), seed=0,
                     log_dir=tmp_path / "run", resume=True)

    result = evaluate(resumed.policy(), dataset.eval_env_kwargs(), episodes=1, first_episode_seed=7,
                      max_steps=4)
    assert result["lengths"] == [4] and len(result["returns"]) == 1
    low, high = 5.0, 598.0
    assert result["normalized_scores"][0] == pytest.approx((result["returns"][0] - low) / (high - low))

    written = run_analysis(resumed, dataset, tmp_path / "analysis", seed=0, horizon=4)
    for path in written.values():
        assert path.exists() and path.stat().st_size > 0
    uncertainty = (tmp_path / "analysis" / "uncertainty.csv").read_text()
    assert "exogenous" in uncertainty and "endogenous" in uncertainty
    assert json.loads((tmp_path / "analysis" / "reconstruction_rows.json").read_text())[:3] == [
        "observation", "joint", "endogenous"]


@pytest.mark.parametrize("changes", [
    {"sampling": "return_curriculum", "replicate_off_by_one": True, "penalty": "lompo"},
    {"separated": False, "sampling": "random", "penalty": "semopo_code"},
    {"exo_only_scale": 0.0, "penalty": "semopo_paper"},
])
def test_ablation_switches_train(walker_dataset, changes):
    dataset = load_dataset(walker_dataset)
    agent = semopo.train(dataset, tiny_config(model_steps=2, policy_steps=1, **changes), seed=1)
    assert (agent.model_updates, agent.policy_updates) == (2, 1)
    assert agent.world_model.separated == changes.get("separated", True)
    if changes.get("exo_only_scale") == 0.0:
        assert agent.world_model.exo_only_decoder is None
        assert "exogenous_only" not in reconstruction_rows(agent, random_batch(agent.config))


def test_an_interrupted_run_resumes_to_the_same_result(walker_dataset, tmp_path):
    dataset = load_dataset(walker_dataset)
    config = tiny_config(model_steps=5, policy_steps=2, log_every=1)
    straight = semopo.train(dataset, config, seed=5, log_dir=tmp_path / "straight")
    part = semopo.train(dataset, config, seed=5, log_dir=tmp_path / "split", stop_after=3)
    assert (part.model_updates, part.policy_updates) == (3, 0)
    resumed = semopo.train(dataset, config, seed=5, log_dir=tmp_path / "split", resume=True)
    for name, agent_state in (("world_model", lambda a: a.world_model.state_dict()),
                              ("behavior", lambda a: a.behavior.state_dict())):
        for key, value in agent_state(straight).items():
            assert torch.equal(value, agent_state(resumed)[key]), f"{name}.{key}"
    def logged(run):
        return [row for row in read_metrics(tmp_path / run / "metrics.csv")
                if row["metric"] != "updates_per_second"]  # wall-clock speed differs

    assert logged("split") == logged("straight")
