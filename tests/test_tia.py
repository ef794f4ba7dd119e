"""Tests of collectors.tia: TIA's adversarial distractor branch, mask blend, KL, acting, updates, checkpoints."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from collectors import TIAAgent, TIAConfig, TIAInputError
from collectors.tia import forked_torch_rng
from collectors.tia_model import dreamer_v1_kl, explained_variance
from lqv_d4rl.errors import UnknownTaskError
from lqv_d4rl.networks import Optimizer, image_log_likelihood, kl_balanced, preprocess_image
from lqv_d4rl.synthetic import moving_block_batch

torch.set_num_threads(1)

ACTION_DIM = 2
TINY = dataclasses.replace(TIAConfig.smoke(), batch_size=3, seq_len=6, horizon=2, distractor_reward_steps=2)


def scene_batch(batch=3, length=6, action_dim=ACTION_DIM, seed=0):
    """Sequences that look like the real thing (``lqv_d4rl.synthetic.moving_block_batch``): the
    reward is visible to the task branch and not in the distractor stripes."""
    return moving_block_batch(batch, length, action_dim, seed)


def observations(count=3, seed=1):
    return scene_batch(count, 1, seed=seed)["image"][:, 0]


def gaussian_state(batch, size, generator, requires_grad=False):
    mean = torch.randn(batch, size, generator=generator).requires_grad_(requires_grad)
    std = (0.2 + torch.rand(batch, size, generator=generator)).requires_grad_(requires_grad)
    return {"mean": mean, "std": std}


# ------------------------------------------------------------------------ adversarial branch


def test_adversarial_term_pushes_reward_information_out_of_distractor_features():
    model = TIAAgent(TINY, ACTION_DIM, seed=0).world_model
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(64, model.distractor_rssm.feature_dim, generator=generator)
    reward = features[:, 0].clone()  # reward readable from the features: the head can learn it
    optimizer = Optimizer("head", model.distractor_reward_head, 1e-2)
    model.fit_distractor_reward_head(features, reward, optimizer, steps=50)

    model.distractor_reward_head.zero_grad(set_to_none=True)
    features.requires_grad_(True)
    term = model.adversarial_term(features, reward)
    term.backward()
    assert all(p.grad is None for p in model.distractor_reward_head.parameters())
    direction = features.grad / features.grad.norm()
    with torch.no_grad():
        before = model.fixed_head_reward_log_prob(features, reward)
        after = model.fixed_head_reward_log_prob(features - 0.05 * direction, reward)
    assert after < before


def test_adversarial_term_enters_the_distractor_loss_with_weight_lambda_and_spares_the_head():
    agent = TIAAgent(TINY, ACTION_DIM, seed=0)
    model = agent.world_model
    data = agent.to_tensors(scene_batch())
    torch.manual_seed(3)
    observed = model.observe(data)
    objective, metrics = model.losses(data, observed)
    model.config = dataclasses.replace(TINY, adversarial_scale=0.0)
    objective_without, _ = model.losses(data, observed)
    assert torch.allclose(objective - objective_without,
                          TINY.adversarial_scale * metrics["adversarial_reward_log_prob"], rtol=1e-4)
    head = {id(p) for p in model.distractor_reward_head.parameters()}
    trained = [p for opt in agent.model_optimizers.values() for p in opt.parameters]
    assert not head & {id(p) for p in trained}


def test_update_changes_the_distractor_reward_head_only_by_its_fitting_steps():
    config = dataclasses.replace(TINY, distractor_reward_steps=0)
    agent = TIAAgent(config, ACTION_DIM, seed=0)
    before = [p.detach().clone() for p in agent.world_model.distractor_reward_head.parameters()]
    metrics = agent.update(scene_batch())
    after = list(agent.world_model.distractor_reward_head.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert metrics["distractor_grad_norm"] > 0


def test_one_backward_pass_gives_each_group_the_gradient_of_its_own_published_loss():
    agent = TIAAgent(TINY, ACTION_DIM, seed=0)
    model, cfg = agent.world_model, TINY
    data = agent.to_tensors(scene_batch())
    torch.manual_seed(4)
    observed = model.observe(data)
    task_features, distractor_features = observed["task_features"], observed["distractor_features"]
    target, reward = preprocess_image(data["image"]), data["reward"]
    joint_ll = model.decode_joint(task_features, distractor_features).log_prob(target).mean()
    task_loss = (dreamer_v1_kl(observed["task_post"], observed["task_prior"], cfg.free_nats)[0]
                 - joint_ll - model.reward_head(task_features).log_prob(reward).mean())
    distractor_loss = (dreamer_v1_kl(observed["distractor_post"], observed["distractor_prior"], cfg.free_nats)[0]
                       - joint_ll
                       - 1.5 * image_log_likelihood(model.distractor_decoder(distractor_features), target).mean()
                       + cfg.adversarial_scale * model.fixed_head_reward_log_prob(distractor_features, reward))
    groups = [(model.task_parameters(), task_loss), (model.distractor_parameters(), distractor_loss),
              (model.decoder_parameters(), task_loss + distractor_loss)]
    objective, _ = model.losses(data, observed)
    for parameters, loss in groups:
        expected = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
        got = torch.autograd.grad(objective, parameters, retain_graph=True, allow_unused=True)
        for mine, reference in zip(got, expected):
            if reference is None:
                assert mine is None or not mine.any()
                continue
            assert torch.allclose(mine, reference, rtol=1e-4, atol=1e-6 * reference.abs().max().item())


# ------------------------------------------------------------------------ mask blend and KL


def test_joint_image_is_a_convex_combination_of_the_branch_means():
    model = TIAAgent(TINY, ACTION_DIM, seed=0).world_model
    generator = torch.Generator().manual_seed(1)
    task = 3 * torch.randn(2, 4, model.task_rssm.feature_dim, generator=generator)
    distractor = 3 * torch.randn(2, 4, model.distractor_rssm.feature_dim, generator=generator)
    with torch.no_grad():
        joint = model.decode_joint(task, distractor)
    low = torch.minimum(joint.endo_mean, joint.exo_mean)
    high = torch.maximum(joint.endo_mean, joint.exo_mean)
    assert joint.mean.shape == (2, 4, 64, 64, 3)
    assert ((joint.mean >= low - 1e-6) & (joint.mean <= high + 1e-6)).all()
    assert ((joint.mask > 0) & (joint.mask < 1)).all()
    assert torch.allclose(joint.mean, joint.mask * joint.endo_mean + (1 - joint.mask) * joint.exo_mean, atol=1e-6)


def closed_form_gaussian_kl(post, prior):
    m1, s1, m2, s2 = post["mean"], post["std"], prior["mean"], prior["std"]
    return (torch.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5).sum(-1)


def test_kl_equals_the_gaussian_formula_above_free_nats_and_trains_both_sides():
    generator = torch.Generator().manual_seed(2)
    post, prior = (gaussian_state(16, 5, generator, requires_grad=True) for _ in range(2))
    expected = closed_form_gaussian_kl(post, prior).mean()
    loss, kl = dreamer_v1_kl(post, prior, free_nats=0.1)
    assert expected > 0.1
    assert torch.allclose(loss, expected, rtol=1e-5)
    assert torch.allclose(kl.mean(), expected, rtol=1e-5)
    loss.backward()
    assert post["mean"].grad.abs().sum() > 0 and prior["mean"].grad.abs().sum() > 0


def test_kl_clamps_at_free_nats_with_no_gradient():
    generator = torch.Generator().manual_seed(3)
    post, prior = (gaussian_state(16, 5, generator, requires_grad=True) for _ in range(2))
    free = closed_form_gaussian_kl(post, prior).mean().item() + 1.0
    loss, _ = dreamer_v1_kl(post, prior, free_nats=free)
    assert loss.item() == pytest.approx(free)
    loss.backward()
    assert all(t.grad is None or not t.grad.any() for t in (*post.values(), *prior.values()))


def test_kl_balance_option_uses_dreamerv2_balancing():
    generator = torch.Generator().manual_seed(4)
    post, prior = (gaussian_state(8, 3, generator) for _ in range(2))
    loss, _ = dreamer_v1_kl(post, prior, free_nats=0.5, balance=0.8)
    expected, _ = kl_balanced(post, prior, 0.8, 0.5)
    assert torch.allclose(loss, expected)
    assert torch.allclose(loss, closed_form_gaussian_kl(post, prior).mean().clamp_min(0.5), rtol=1e-5)


# ------------------------------------------------------------------------ acting


def run_actions(agent, steps=3, explore=True):
    state = agent.initial_state(3)
    actions = []
    for step in range(steps):
        is_first = np.full(3, step == 0)
        action, state = agent.act(observations(seed=step), state, is_first, explore=explore)
        actions.append(action)
    return np.stack(actions)


def test_act_gives_bounded_float32_actions_deterministic_per_seed():
    actions = run_actions(TIAAgent(TINY, ACTION_DIM, seed=5))
    assert actions.shape == (3, 3, ACTION_DIM) and actions.dtype == np.float32
    assert (np.abs(actions) <= 1).all()
    np.testing.assert_array_equal(actions, run_actions(TIAAgent(TINY, ACTION_DIM, seed=5)))
    assert not np.array_equal(actions, run_actions(TIAAgent(TINY, ACTION_DIM, seed=6)))


def test_act_leaves_the_global_torch_rng_alone():
    agent = TIAAgent(TINY, ACTION_DIM, seed=0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_actions(agent, steps=2)
    assert torch.equal(torch.rand(3), expected)


def test_exploration_noise_is_added_only_when_exploring():
    noisy = dataclasses.replace(TINY, expl_noise=0.3)
    quiet = dataclasses.replace(TINY, expl_noise=0.0)
    greedy_noisy = run_actions(TIAAgent(noisy, ACTION_DIM, seed=7), explore=False)
    greedy_quiet = run_actions(TIAAgent(quiet, ACTION_DIM, seed=7), explore=False)
    np.testing.assert_array_equal(greedy_noisy, greedy_quiet)
    exploring_noisy = run_actions(TIAAgent(noisy, ACTION_DIM, seed=7), explore=True)
    exploring_quiet = run_actions(TIAAgent(quiet, ACTION_DIM, seed=7), explore=True)
    # Same latent and actor samples, so the first step differs by the (clipped) noise alone.
    difference = exploring_noisy[0] - exploring_quiet[0]
    assert np.abs(difference).max() > 0
    assert np.abs(difference).max() < 5 * 0.3


def test_is_first_resets_the_acting_state():
    agent = TIAAgent(TINY, ACTION_DIM, seed=8)
    state = agent.initial_state(3)
    for step in range(2):
        _, state = agent.act(observations(seed=step), state, np.zeros(3, bool), explore=True)
    saved = agent.act_generator.get_state()
    reset, _ = agent.act(observations(seed=9), state, np.ones(3, bool), explore=True)
    agent.act_generator.set_state(saved)
    fresh, _ = agent.act(observations(seed=9), agent.initial_state(3), np.ones(3, bool), explore=True)
    np.testing.assert_array_equal(reset, fresh)


def test_act_rejects_observations_of_the_wrong_shape():
    agent = TIAAgent(TINY, ACTION_DIM, seed=0)
    with pytest.raises(TIAInputError, match="64, 64, 3"):
        agent.act(np.zeros((2, 84, 84, 3), np.uint8), None, np.ones(2, bool), explore=False)


# ------------------------------------------------------------------------ learning and checkpoints


def test_explained_variance_matches_the_hand_computed_value():
    target = torch.tensor([0.0, 2.0, 4.0])  # variance 8/3
    # squared errors 1, 0, 1: mean 2/3, so 1 - (2/3) / (8/3) = 0.75
    assert explained_variance(torch.tensor([1.0, 2.0, 3.0]), target).item() == pytest.approx(0.75)
    assert explained_variance(torch.full((3,), 2.0), target).item() == pytest.approx(0.0)  # the mean
    assert explained_variance(target, target).item() == pytest.approx(1.0)
    # reversed: squared errors 16, 0, 16, so 1 - (32/3) / (8/3) = -3
    assert explained_variance(torch.tensor([4.0, 2.0, 0.0]), target).item() == pytest.approx(-3.0)


def test_updates_return_finite_metrics_and_lower_the_world_model_loss():
    config = dataclasses.replace(TINY, adversarial_scale=100.0)
    agent = TIAAgent(config, ACTION_DIM, seed=0)
    batch = scene_batch()
    history = [agent.update(batch) for _ in range(12)]
    for metrics in history:
        assert all(math.isfinite(value) for value in metrics.values()), metrics
    assert {"task_loss", "distractor_loss", "model_loss", "actor_loss", "critic_loss",
            "reward_explained_variance", "adversarial_reward_explained_variance"} <= set(history[0])
    assert history[-1]["model_loss"] < history[0]["model_loss"]
    assert history[-1]["joint_image_log_prob"] > history[0]["joint_image_log_prob"]


def test_update_rejects_a_batch_with_the_wrong_action_size():
    agent = TIAAgent(TINY, ACTION_DIM, seed=0)
    with pytest.raises(TIAInputError, match="action"):
        agent.update(scene_batch(action_dim=ACTION_DIM + 1))


def test_save_and_load_continue_identically(tmp_path):
    agent = TIAAgent(TINY, ACTION_DIM, seed=11)
    batch = scene_batch(seed=2)
    agent.update(batch)
    run_actions(agent, steps=1)
    path = agent.save(tmp_path / "tia.pt")
    restored = TIAAgent.load(path)
    np.testing.assert_array_equal(run_actions(agent), run_actions(restored))
    assert agent.update(batch) == restored.update(batch)
    np.testing.assert_array_equal(run_actions(agent, explore=False), run_actions(restored, explore=False))
    for (name, mine), (_, theirs) in zip(agent.state_dict().items(), restored.state_dict().items()):
        assert torch.equal(mine, theirs), name


def test_load_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint")
    with pytest.raises(TIAInputError, match="not a readable TIA checkpoint"):
        TIAAgent.load(path)


def test_reconstruct_returns_uint8_previews_of_every_part():
    agent = TIAAgent(TINY, ACTION_DIM, seed=0)
    images = agent.reconstruct(scene_batch())
    assert set(images) == {"truth", "joint", "task", "distractor", "distractor_only", "mask"}
    for image in images.values():
        assert image.shape == (3, 6, 64, 64, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(images["truth"], scene_batch()["image"])


def test_decompose_reads_both_reward_heads_from_the_same_posteriors_as_the_images():
    agent = TIAAgent(TINY, ACTION_DIM, seed=0)
    images, rewards = agent.decompose(scene_batch())
    for name, image in agent.reconstruct(scene_batch()).items():
        np.testing.assert_array_equal(images[name], image)
    model = agent.world_model
    with torch.no_grad(), forked_torch_rng(0, "cpu"):  # the seed decompose draws its latents with
        observed = model.observe(agent.to_tensors(scene_batch()))
        task = model.reward_head(observed["task_features"]).mean.numpy()
        distractor = model.distractor_reward_head(observed["distractor_features"]).mean.numpy()
    assert set(rewards) == {"task", "distractor"}
    for name, expected in (("task", task), ("distractor", distractor)):
        assert rewards[name].shape == (3, 6) and rewards[name].dtype == np.float32
        np.testing.assert_allclose(rewards[name], expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------ faithful to TIA's code


def test_both_rssms_use_the_standard_gru_cell_of_dreamer_v1():
    # Dreamer-v1 / TIA step their RSSMs with Keras' GRUCell, whose equations are torch's GRUCell
    # (tests/test_networks.py writes them out); DreamerV2's cell gates differently.
    model = TIAAgent(TINY, ACTION_DIM, seed=0).world_model
    generator = torch.Generator().manual_seed(0)
    for rssm in (model.task_rssm, model.distractor_rssm):
        reference = torch.nn.GRUCell(TINY.hidden, TINY.deter)
        reference.load_state_dict(rssm.cell.state_dict())
        inputs = torch.randn(4, TINY.hidden, generator=generator)
        state = torch.randn(4, TINY.deter, generator=generator)
        with torch.no_grad():
            assert torch.allclose(rssm.cell(inputs, state), reference(inputs, state), atol=1e-6)


def test_checkpoints_from_before_the_cell_option_load_with_dreamerv2s_cell(tmp_path):
    old = TIAAgent(dataclasses.replace(TINY, cell="dreamerv2"), ACTION_DIM, seed=0)
    path = old.save(tmp_path / "old.pt")
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["config"]["cell"]
    torch.save(checkpoint, path)
    loaded = TIAAgent.load(path)
    assert loaded.config.cell == "dreamerv2"
    torch.testing.assert_close(loaded.state_dict(), old.state_dict())
    checkpoint["version"] = 1  # written before the dreamerv2 cell had its bias
    torch.save(checkpoint, path)
    with pytest.raises(TIAInputError, match="before the dreamerv2 GRU cell got its bias"):
        TIAAgent.load(path)


# ------------------------------------------------------------------------ configs


def test_paper_config_uses_the_published_adversarial_weights():
    assert TIAConfig.paper("walker_walk").adversarial_scale == 20000
    assert TIAConfig.paper("cheetah_run").adversarial_scale == 20000
    assert TIAConfig.paper("hopper_hop").adversarial_scale == 30000
    paper = TIAConfig.paper("walker_walk")
    assert (paper.cnn_depth, paper.deter, paper.stoch, paper.free_nats, paper.batch_size) == (26, 200, 30, 3.0, 50)
    with pytest.raises(UnknownTaskError):
        TIAConfig.paper("walker_run")


@pytest.mark.parametrize("changes, field", [
    ({"eval_every": 0}, "eval_every"),  # the online loop would never move its next evaluation on
    ({"train_every": 0}, "train_every"),
    ({"kl_balance": 1.5}, "kl_balance"),
    ({"free_nats": -1.0}, "free_nats"),
    ({"cnn_activation": "tanh"}, "cnn_activation"),
    ({"cell": "lstm"}, "cell"),
    ({"batch_size": 2.5}, "batch_size"),
])
def test_config_rejects_settings_that_cannot_work(changes, field):
    with pytest.raises(TIAInputError, match=field):
        dataclasses.replace(TIAConfig.smoke(), **changes)
