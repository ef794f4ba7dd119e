"""Tests of lqv_d4rl.networks: shapes, RSSM semantics, losses, penalties, behaviour learning."""

import math

import pytest
import torch
import torch.distributions as td

from lqv_d4rl.networks import (
    MLP,
    RSSM,
    ActionHead,
    ActorCritic,
    BehaviorConfig,
    ConvDecoder,
    ConvEncoder,
    DenseHead,
    Imagination,
    JointMaskDecoder,
    MaskDecoder,
    Optimizer,
    TanhNormal,
    TruncatedNormal,
    WorldModel,
    WorldModelConfig,
    autocast,
    categorical_latent,
    count_parameters,
    disagreement_lompo,
    disagreement_semopo_code,
    disagreement_semopo_paper,
    ensemble_log_probs,
    ensemble_predictions,
    flatten_states,
    map_states,
    image_log_likelihood,
    imagination_disagreement,
    kl_balanced,
    lambda_return,
    preprocess_image,
    state_disagreement,
    step_together,
)

torch.set_num_threads(1)

TINY_MODEL = dict(depth=4, deter=16, stoch=4, classes=4, hidden=16, units=16, reward_layers=1)


def make_rssm(classes=4, ensemble=1, action_free=False, seed=0):
    torch.manual_seed(seed)
    return RSSM(embed_dim=8, action_dim=2, deter=12, stoch=4, classes=classes, hidden=10,
                ensemble=ensemble, action_free=action_free, seed=seed)


def random_images(*shape):
    return torch.randint(0, 256, (*shape, 64, 64, 3), dtype=torch.uint8)


# ------------------------------------------------------------------------------------ conv


def test_encoder_embeds_channels_last_and_channels_first_images_alike():
    encoder = ConvEncoder(depth=4)
    images = random_images(2, 3)
    embedding = encoder(images)
    assert embedding.shape == (2, 3, 32 * 4) and encoder.output_dim == 128
    channels_first = encoder(images.permute(0, 1, 4, 2, 3))
    torch.testing.assert_close(embedding, channels_first)


def test_encoder_rejects_wrong_image_size_with_a_helpful_message():
    with pytest.raises(ValueError, match="64x64"):
        ConvEncoder(depth=4)(torch.zeros(2, 84, 84, 3, dtype=torch.uint8))


def test_preprocess_maps_pixels_to_minus_half_plus_half():
    pixels = torch.tensor([0, 255], dtype=torch.uint8)
    torch.testing.assert_close(preprocess_image(pixels), torch.tensor([-0.5, 0.5]))


def test_decoders_produce_64x64_channels_last_means():
    features = torch.randn(2, 3, 20)
    assert ConvDecoder(20, depth=4)(features).shape == (2, 3, 64, 64, 3)
    mean, mask = MaskDecoder(20, depth=4)(features)
    assert mean.shape == mask.shape == (2, 3, 64, 64, 3)


def test_decoder_first_layer_matches_a_real_transposed_convolution():
    decoder = ConvDecoder(20, depth=4)
    hidden = torch.randn(3, 32 * 4)
    expected = decoder.first(hidden.reshape(3, -1, 1, 1))
    torch.testing.assert_close(decoder._first_layer(hidden), expected, rtol=1e-5, atol=1e-6)


def test_image_log_likelihood_is_unit_normal_over_pixels():
    mean, target = torch.randn(2, 64, 64, 3), torch.randn(2, 64, 64, 3)
    expected = td.Independent(td.Normal(mean, 1.0), 3).log_prob(target)
    torch.testing.assert_close(image_log_likelihood(mean, target), expected)


# ------------------------------------------------------------------------------------ mask


def test_joint_mask_blend_is_convex_combination_of_branch_means():
    torch.manual_seed(0)
    decoder = JointMaskDecoder(10, 6, depth=4)
    image = decoder(torch.randn(5, 10), torch.randn(5, 6))
    assert image.mean.shape == (5, 64, 64, 3) and image.mask.shape == (5, 64, 64, 1)
    assert bool(((image.mask > 0) & (image.mask < 1)).all())
    low = torch.minimum(image.endo_mean, image.exo_mean) - 1e-6
    high = torch.maximum(image.endo_mean, image.exo_mean) + 1e-6
    assert bool(((image.mean >= low) & (image.mean <= high)).all())
    expected = image.mask * image.endo_mean + (1 - image.mask) * image.exo_mean
    torch.testing.assert_close(image.mean, expected)
    assert image.log_prob(torch.zeros(5, 64, 64, 3)).shape == (5,)


def test_joint_mask_decoder_branches_can_have_their_own_depth_and_activation():
    decoder = JointMaskDecoder(10, 6, depth=4, exo_depth=2, activation=torch.nn.ReLU)
    assert (decoder.endo.depth, decoder.exo.depth) == (4, 2)
    assert any(isinstance(layer, torch.nn.ReLU) for layer in decoder.exo.net)
    assert decoder(torch.randn(5, 10), torch.randn(5, 6)).mean.shape == (5, 64, 64, 3)


# ------------------------------------------------------------------------------------ RSSM


@pytest.mark.parametrize("classes", [None, 4])
def test_rssm_observe_and_imagine_shapes(classes):
    rssm = make_rssm(classes=classes)
    post, prior = rssm.observe(torch.randn(3, 5, 8), torch.randn(3, 5, 2), torch.zeros(3, 5, dtype=torch.bool))
    stoch_shape = (4, 4) if classes else (4,)
    for state in (post, prior):
        assert state["deter"].shape == (3, 5, 12)
        assert state["stoch"].shape == (3, 5, *stoch_shape)
    assert rssm.features(post).shape == (3, 5, rssm.feature_dim)
    assert rssm.feature_dim == 12 + (16 if classes else 4)
    trajectory = rssm.imagine(lambda f: torch.tanh(f[..., :2]), flatten_states(post), horizon=4)
    assert trajectory.features.shape == (5, 15, rssm.feature_dim)
    assert trajectory.actions.shape == (4, 15, 2)
    assert trajectory.states["deter"].shape == (5, 15, 12)


@pytest.mark.parametrize("classes", [None, 4])
def test_observe_resets_state_where_is_first(classes):
    rssm = make_rssm(classes=classes)
    embed, action = torch.randn(2, 6, 8), torch.randn(2, 6, 2)
    is_first = torch.zeros(2, 6, dtype=torch.bool)
    is_first[:, 3] = True
    post, _ = rssm.observe(embed, action, is_first)
    fresh, _ = rssm.observe(embed[:, 3:], action[:, 3:], is_first[:, 3:])
    stat = "logits" if classes else "mean"
    # deter and the posterior statistics at a reset depend only on the zero state and the embedding.
    torch.testing.assert_close(post["deter"][:, 3], fresh["deter"][:, 0])
    torch.testing.assert_close(post[stat][:, 3], fresh[stat][:, 0])
    no_reset, _ = rssm.observe(embed, action, torch.zeros(2, 6, dtype=torch.bool))
    assert not torch.allclose(no_reset["deter"][:, 3], post["deter"][:, 3])


def test_img_step_uses_the_chosen_ensemble_head():
    rssm = make_rssm(ensemble=3)
    state = rssm.initial(4)
    state["stoch"] = categorical_latent(torch.randn(4, 4, 4)).sample()
    action = torch.randn(4, 2)
    all_heads = rssm.ensemble_prior_stats(state, action)
    assert all_heads["logits"].shape == (3, 4, 4, 4)
    for head in range(3):
        prior = rssm.img_step(state, action, head=head)
        torch.testing.assert_close(prior["logits"], all_heads["logits"][head])
    assert not torch.allclose(all_heads["logits"][0], all_heads["logits"][1])


def test_ensemble_head_draws_are_seeded_and_cover_all_heads():
    first = [make_rssm(ensemble=7, seed=5).draw_head() for _ in range(1)]
    rssm_a, rssm_b = make_rssm(ensemble=7, seed=5), make_rssm(ensemble=7, seed=5)
    draws_a = [rssm_a.draw_head() for _ in range(200)]
    draws_b = [rssm_b.draw_head() for _ in range(200)]
    assert draws_a == draws_b and draws_a[0] == first[0]
    assert set(draws_a) == set(range(7))
    start = flatten_states(rssm_a.observe(torch.randn(2, 3, 8), torch.randn(2, 3, 2),
                                          torch.zeros(2, 3, dtype=torch.bool))[0])
    trajectory = rssm_a.imagine(lambda f: torch.zeros(6, 2), start, horizon=5)
    assert len(trajectory.heads) == 5 and all(0 <= h < 7 for h in trajectory.heads)


def test_action_free_rssm_ignores_actions():
    rssm = make_rssm(action_free=True)
    embed, is_first = torch.randn(2, 5, 8), torch.zeros(2, 5, dtype=torch.bool)
    actions = torch.randn(2, 5, 2, requires_grad=True)
    other_actions = 10 * torch.randn(2, 5, 2)
    torch.manual_seed(1)
    post_a, prior_a = rssm.observe(embed, actions, is_first)
    torch.manual_seed(1)
    post_b, prior_b = rssm.observe(embed, other_actions, is_first)
    for key in post_a:
        torch.testing.assert_close(post_a[key], post_b[key])
        torch.testing.assert_close(prior_a[key], prior_b[key])
    total = rssm.features(post_a).sum() + prior_a["logits"].sum()
    (gradient,) = torch.autograd.grad(total, actions, allow_unused=True)
    assert gradient is None or bool((gradient == 0).all())


@pytest.mark.parametrize("std_activation", ["softplus", "sigmoid2"])
def test_gaussian_std_stays_above_min_std(std_activation):
    torch.manual_seed(0)
    rssm = RSSM(8, 2, deter=12, stoch=4, hidden=10, min_std=0.1, std_activation=std_activation)
    post, prior = rssm.observe(100 * torch.randn(2, 5, 8), torch.randn(2, 5, 2), torch.zeros(2, 5, dtype=torch.bool))
    assert bool((post["std"] >= 0.1).all()) and bool((prior["std"] >= 0.1).all())
    if std_activation == "sigmoid2":
        assert bool((post["std"] <= 2.1).all())


def standard_gru_step(cell, inputs, state):
    """The standard GRU (Keras GRUCell with reset_after, torch.nn.GRUCell) written out."""
    w_r, w_z, w_n = cell.weight_ih.chunk(3)
    u_r, u_z, u_n = cell.weight_hh.chunk(3)
    b_r, b_z, b_n = cell.bias_ih.chunk(3)
    c_r, c_z, c_n = cell.bias_hh.chunk(3)
    reset = torch.sigmoid(inputs @ w_r.T + b_r + state @ u_r.T + c_r)
    update = torch.sigmoid(inputs @ w_z.T + b_z + state @ u_z.T + c_z)
    candidate = torch.tanh(inputs @ w_n.T + b_n + reset * (state @ u_n.T + c_n))
    return (1 - update) * candidate + update * state


def test_gru_cell_option_is_the_standard_gru_initialized_like_keras():
    torch.manual_seed(0)
    rssm = RSSM(embed_dim=8, action_dim=2, deter=12, stoch=4, classes=None, hidden=10, cell="gru")
    cell = rssm.cell
    assert all(torch.count_nonzero(b) == 0 for b in (cell.bias_ih, cell.bias_hh))
    assert torch.allclose(cell.weight_hh.T @ cell.weight_hh, torch.eye(12), atol=1e-5)
    with torch.no_grad():  # random biases, so the check covers them too
        cell.bias_ih.normal_()
        cell.bias_hh.normal_()
    inputs, state = torch.randn(5, 10), torch.randn(5, 12)
    assert torch.allclose(cell(inputs, state), standard_gru_step(cell, inputs, state), atol=1e-6)
    with pytest.raises(ValueError, match="cell"):
        RSSM(embed_dim=8, action_dim=2, cell="lstm")


def test_layer_norm_gru_has_a_trainable_bias_like_dreamerv2():
    # DreamerV2's GRUCell: Dense(3 * size, use_bias=norm is not None) with norm a bool, so always
    # a bias (Keras initializes it to zeros), before the layer norm
    for layer_norm in (True, False):
        torch.manual_seed(0)
        rssm = RSSM(embed_dim=8, action_dim=2, deter=12, stoch=4, classes=4, hidden=10,
                    layer_norm=layer_norm)
        bias = rssm.cell.linear.bias
        assert bias is not None and bias.shape == (3 * 12,) and not bias.any()
        assert "cell.linear.bias" in rssm.state_dict()
        norm_parameters = 2 * 3 * 12 if layer_norm else 0
        assert count_parameters(rssm.cell) == (10 + 12) * 3 * 12 + 3 * 12 + norm_parameters
        post, _ = rssm.observe(torch.randn(2, 3, 8), torch.randn(2, 3, 2),
                               torch.zeros(2, 3, dtype=torch.bool))
        post["deter"].pow(2).sum().backward()
        assert bias.grad.abs().sum() > 0


def test_action_conditioned_rssm_depends_on_actions():
    rssm = make_rssm()
    embed, is_first = torch.randn(2, 5, 8), torch.zeros(2, 5, dtype=torch.bool)
    actions = torch.randn(2, 5, 2, requires_grad=True)
    post, _ = rssm.observe(embed, actions, is_first)
    (gradient,) = torch.autograd.grad(post["deter"].sum(), actions)
    assert gradient.abs().sum() > 0


def test_posterior_at_t_is_conditioned_on_the_action_stored_at_entry_t_and_not_later():
    # entry t holds a_{t-1}, the action that led to o_t: the state at t uses actions[:, :t+1] only
    rssm = make_rssm()
    embed, is_first = torch.randn(1, 4, 8), torch.zeros(1, 4, dtype=torch.bool)
    actions = torch.randn(1, 4, 2, requires_grad=True)
    post, _ = rssm.observe(embed, actions, is_first)
    (gradient,) = torch.autograd.grad(post["deter"][:, 2].sum(), actions)
    assert gradient[0, 2].abs().sum() > 0 and gradient[0, 1].abs().sum() > 0
    assert not gradient[0, 3].any()


def test_same_seed_gives_identical_outputs():
    outputs = []
    for _ in range(2):
        rssm = make_rssm(ensemble=3, seed=3)
        torch.manual_seed(11)
        post, _ = rssm.observe(torch.ones(2, 4, 8), torch.ones(2, 4, 2), torch.zeros(2, 4, dtype=torch.bool))
        trajectory = rssm.imagine(lambda f: torch.tanh(f[..., :2]), flatten_states(post), 3)
        outputs.append((trajectory.features, trajectory.heads))
    torch.testing.assert_close(outputs[0][0], outputs[1][0], rtol=0, atol=0)
    assert outputs[0][1] == outputs[1][1]


# ------------------------------------------------------------------------------------ distributions


def test_straight_through_categorical_passes_gradients_to_logits():
    logits = torch.randn(3, 4, 5, requires_grad=True)
    weights = torch.randn(3, 4, 5)
    sample = categorical_latent(logits).rsample()
    torch.testing.assert_close(sample.detach(), sample.detach().round())
    torch.testing.assert_close(sample.detach().sum(-1), torch.ones(3, 4))
    (gradient,) = torch.autograd.grad((sample * weights).sum(), logits)
    (expected,) = torch.autograd.grad((torch.softmax(logits, -1) * weights).sum(), logits)
    torch.testing.assert_close(gradient, expected)
    assert gradient.abs().sum() > 0


@pytest.mark.parametrize("make", [
    lambda loc, scale: TruncatedNormal(loc, scale, -1.0, 1.0),
    lambda loc, scale: TanhNormal(loc, scale),
])
def test_action_distributions_are_normalized_on_minus_one_one(make):
    dist = make(torch.tensor([0.3]), torch.tensor([0.7]))
    grid = torch.linspace(-1 + 1e-5, 1 - 1e-5, 20001).unsqueeze(-1)
    density = dist.log_prob(grid).exp().squeeze(-1)
    assert abs(torch.trapezoid(density, grid.squeeze(-1)).item() - 1.0) < 1e-3
    samples = dist.rsample((1000,))
    assert bool(((samples >= -1) & (samples <= 1)).all())


def test_truncated_normal_entropy_matches_numerical_integral():
    dist = TruncatedNormal(torch.tensor([0.5]), torch.tensor([0.8]))
    grid = torch.linspace(-1, 1, 20001).unsqueeze(-1)
    log_density = dist.log_prob(grid).squeeze(-1)
    numeric = -torch.trapezoid(log_density.exp() * log_density, grid.squeeze(-1))
    assert abs(dist.entropy().item() - numeric.item()) < 1e-3


@pytest.mark.parametrize("dist", ["trunc_normal", "tanh_normal"])
def test_action_head_gives_bounded_reparameterized_actions(dist):
    head = ActionHead(6, 3, layers=1, units=8, dist=dist)
    features = torch.randn(5, 6)
    action_dist = head(features)
    action = action_dist.rsample()
    assert action.shape == (5, 3) and bool((action.abs() <= 1).all())
    assert action_dist.entropy().shape == (5,) and action_dist.log_prob(action).shape == (5,)
    action.sum().backward()
    assert all(p.grad is not None for p in head.parameters())


def test_dense_heads_build_normal_and_bernoulli_distributions():
    features = torch.randn(4, 7, 6)
    reward = DenseHead(6, (), "normal", layers=1, units=8)(features)
    assert reward.mean.shape == (4, 7) and reward.log_prob(torch.zeros(4, 7)).shape == (4, 7)
    discount = DenseHead(6, (), "bernoulli", layers=1, units=8)(features)
    assert bool(((discount.mean > 0) & (discount.mean < 1)).all())
    with pytest.raises(ValueError, match="normal"):
        DenseHead(6, (), "laplace")


# ------------------------------------------------------------------------------------ KL


def _kl_terms(classes):
    torch.manual_seed(0)
    if classes:
        post = {"logits": torch.randn(3, 4, 5, requires_grad=True)}
        prior = {"logits": torch.randn(3, 4, 5, requires_grad=True)}
    else:
        post = {"mean": torch.randn(3, 4, requires_grad=True), "std": torch.rand(3, 4) + 0.5}
        prior = {"mean": torch.randn(3, 4, requires_grad=True), "std": torch.rand(3, 4) + 0.5}
    return post, prior


@pytest.mark.parametrize("classes", [None, 5])
def test_kl_balancing_value_and_gradient_split(classes):
    post, prior = _kl_terms(classes)
    key = "logits" if classes else "mean"
    dist = (lambda s: td.Independent(td.OneHotCategorical(logits=s["logits"]), 1)) if classes else (
        lambda s: td.Independent(td.Normal(s["mean"], s["std"]), 1))
    loss, kl = kl_balanced(post, prior, balance=0.8, free=0.0)
    plain = td.kl_divergence(dist(post), dist(prior)).mean()
    torch.testing.assert_close(loss, plain)
    torch.testing.assert_close(kl.mean(), plain.detach())
    grad_post, grad_prior = torch.autograd.grad(loss, [post[key], prior[key]])
    plain_post, plain_prior = torch.autograd.grad(plain, [post[key], prior[key]])
    torch.testing.assert_close(grad_post, 0.2 * plain_post)
    torch.testing.assert_close(grad_prior, 0.8 * plain_prior)


def test_free_nats_clamp_the_mean_kl():
    post, prior = _kl_terms(5)
    _, kl = kl_balanced(post, prior, free=0.0)
    high_free = kl.mean().item() + 1.0
    loss, _ = kl_balanced(post, prior, free=high_free)
    assert loss.item() == pytest.approx(high_free)
    gradients = torch.autograd.grad(loss, [post["logits"], prior["logits"]], allow_unused=True)
    assert all(g is None or bool((g == 0).all()) for g in gradients)
    # Per-element clamping (free_average=False) differs once some elements are below free.
    middle = kl.median().item()
    per_element, _ = kl_balanced(post, prior, free=middle, free_average=False)
    assert per_element.item() == pytest.approx(kl.clamp_min(middle).mean().item(), rel=1e-5)


def test_kl_against_every_ensemble_head_broadcasts_the_posterior():
    post = {"logits": torch.randn(3, 4, 5)}
    priors = {"logits": torch.randn(7, 3, 4, 5)}
    loss, kl = kl_balanced(post, priors, free=0.0)
    assert kl.shape == (7, 3)
    assert torch.isfinite(loss)


# ------------------------------------------------------------------------------------ penalties


HAND_PROBS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])  # K=3 heads, D=2


def test_semopo_paper_penalty_on_hand_built_ensemble():
    # mean (0.5, 0.5); squared deviations 0.5, 0.5, 0 -> sum 1.0
    assert disagreement_semopo_paper(HAND_PROBS).item() == pytest.approx(1.0)


def test_semopo_code_penalty_on_hand_built_ensemble():
    # norms sqrt(0.5), sqrt(0.5), 0 -> mean 2*sqrt(0.5)/3
    expected = 2 * math.sqrt(0.5) / 3
    assert disagreement_semopo_code(HAND_PROBS).item() == pytest.approx(expected)


def test_lompo_penalty_is_population_std_of_log_probs():
    log_probs = torch.tensor([[-1.0], [-2.0], [-3.0]])
    assert disagreement_lompo(log_probs).item() == pytest.approx(math.sqrt(2 / 3))


def test_penalties_from_categorical_head_stats():
    # Two groups; group 0 holds HAND_PROBS-like rows, group 1 is identical across heads.
    probs = torch.tensor([
        [[0.7, 0.3], [0.5, 0.5]],
        [[0.1, 0.9], [0.5, 0.5]],
    ])  # (K=2, G=2, C=2)
    stats = {"logits": probs.log().unsqueeze(1)}  # (K, N=1, G, C)
    predictions = ensemble_predictions(stats)
    assert predictions.shape == (2, 1, 4)
    # mean of group 0 is (0.4, 0.6); each head deviates by (0.3, -0.3): squared 0.18, norm sqrt(0.18)
    assert disagreement_semopo_paper(predictions).item() == pytest.approx(0.36, rel=1e-5)
    assert disagreement_semopo_code(predictions).item() == pytest.approx(math.sqrt(0.18), rel=1e-5)
    sample = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (N=1, G, C)
    log_probs = ensemble_log_probs(stats, sample)
    expected = torch.tensor([[math.log(0.7 * 0.5)], [math.log(0.1 * 0.5)]])
    torch.testing.assert_close(log_probs, expected)
    assert disagreement_lompo(log_probs).item() == pytest.approx(abs(math.log(7)) / 2, rel=1e-5)


def test_penalties_from_gaussian_head_stats():
    stats = {"mean": torch.tensor([[[0.0]], [[2.0]]]), "std": torch.ones(2, 1, 1)}
    predictions = ensemble_predictions(stats)
    assert disagreement_semopo_paper(predictions).item() == pytest.approx(2.0)
    assert disagreement_semopo_code(predictions).item() == pytest.approx(1.0)
    log_probs = ensemble_log_probs(stats, torch.tensor([[1.0]]))
    torch.testing.assert_close(log_probs[0], log_probs[1])
    assert disagreement_lompo(log_probs).item() == pytest.approx(0.0)


def test_penalties_from_a_real_ensemble_rssm():
    rssm = make_rssm(ensemble=7)
    start = rssm.initial(5)
    stats = rssm.ensemble_prior_stats(start, torch.randn(5, 2))
    predictions = ensemble_predictions(stats)
    for penalty in (disagreement_semopo_paper(predictions), disagreement_semopo_code(predictions)):
        assert penalty.shape == (5,) and bool((penalty > 0).all())
    next_state = rssm.img_step(start, torch.randn(5, 2), head=0)
    assert disagreement_lompo(ensemble_log_probs(stats, next_state["stoch"])).shape == (5,)


@pytest.mark.parametrize("kind", ["semopo_paper", "semopo_code", "lompo"])
def test_imagination_disagreement_matches_a_fresh_ensemble_step(kind):
    rssm = make_rssm(ensemble=5)
    start = rssm.initial(3)
    trajectory = rssm.imagine(lambda f: torch.tanh(f[..., :2]), start, horizon=4)
    penalty = imagination_disagreement(rssm, trajectory, kind)
    assert penalty.shape == (4, 3)
    previous = map_states(lambda value: value[:-1], trajectory.states)
    stats = rssm.ensemble_prior_stats(previous, trajectory.actions)
    if kind == "lompo":
        expected = disagreement_lompo(ensemble_log_probs(stats, trajectory.states["stoch"][1:]))
    elif kind == "semopo_paper":
        expected = disagreement_semopo_paper(ensemble_predictions(stats))
    else:
        expected = disagreement_semopo_code(ensemble_predictions(stats))
    torch.testing.assert_close(penalty, expected)
    with pytest.raises(ValueError, match="semopo_code"):
        imagination_disagreement(rssm, trajectory, "max_aleatoric")


# ------------------------------------------------------------------------------------ behaviour


def test_released_penalty_has_finite_gradients_where_the_heads_agree():
    predictions = torch.full((3, 2, 5), 0.2, requires_grad=True)  # three identical heads
    penalty = disagreement_semopo_code(predictions)
    penalty.sum().backward()
    assert torch.equal(penalty, torch.zeros(2))
    assert torch.isfinite(predictions.grad).all()


@pytest.mark.parametrize("kind", ["semopo_paper", "semopo_code", "lompo"])
def test_state_disagreement_scores_every_observed_state(kind):
    rssm = make_rssm(ensemble=3)
    post, _ = rssm.observe(torch.randn(2, 5, 8), torch.randn(2, 5, 2), torch.zeros(2, 5, dtype=torch.bool))
    values = state_disagreement(rssm, post, kind)
    assert values.shape == (2, 5)
    last = {key: value[:, -1] for key, value in post.items()}
    assert torch.allclose(values[:, -1], state_disagreement(rssm, last, kind))
    with pytest.raises(ValueError, match="unknown penalty"):
        state_disagreement(rssm, post, "variance")


def test_lambda_return_on_hand_computed_example():
    rewards = torch.tensor([1.0, 2.0])
    values = torch.tensor([0.0, 10.0, 20.0])
    discounts = torch.tensor([0.5, 0.5])
    # R_1 = 2 + 0.5 * (0.5 * 20 + 0.5 * 20) = 12;  R_0 = 1 + 0.5 * (0.5 * 10 + 0.5 * 12) = 6.5
    torch.testing.assert_close(lambda_return(rewards, values, discounts, 0.5), torch.tensor([6.5, 12.0]))
    # lambda = 1 is the discounted Monte-Carlo return bootstrapped with v(s_H).
    torch.testing.assert_close(lambda_return(rewards, values, discounts, 1.0), torch.tensor([7.0, 12.0]))


def _toy_imagine(policy, start, horizon):
    """Linear latent dynamics z' = 0.9 z + 0.5 a; features are z itself."""
    states, actions = [start], []
    for _ in range(horizon):
        action = policy(states[-1])
        states.append(0.9 * states[-1] + 0.5 * action)
        actions.append(action)
    return Imagination(torch.stack(states), torch.stack(actions))


def _toy_reward(trajectory):
    """Prefers the action (0.6, -0.4) and latents near the origin."""
    target = torch.tensor([0.6, -0.4])
    return -((trajectory.actions - target) ** 2).sum(-1) - 0.1 * (trajectory.features[1:] ** 2).sum(-1)


def test_actor_critic_improves_imagined_return_on_toy_dynamics():
    torch.manual_seed(0)
    config = BehaviorConfig(horizon=5, units=32, actor_layers=2, critic_layers=2,
                            actor_lr=3e-3, critic_lr=3e-3, slow_critic_every=10)
    agent = ActorCritic(2, 2, config)
    start = torch.randn(64, 2)

    def evaluate():
        with torch.no_grad():
            return _toy_reward(_toy_imagine(lambda z: agent.policy(z, sample=False), start, 5)).sum(0).mean()

    before = evaluate().item()
    for _ in range(150):
        agent.train_step(torch.randn(64, 2), _toy_imagine, _toy_reward)
    after = evaluate().item()
    assert after > before + 0.5, (before, after)
    assert agent.updates == 150


@pytest.mark.parametrize("actor_grad", ["reinforce", "both"])
def test_reinforce_actor_gradients_run(actor_grad):
    torch.manual_seed(0)
    agent = ActorCritic(2, 2, BehaviorConfig(horizon=3, units=8, actor_layers=1, critic_layers=1,
                                             actor_grad=actor_grad, actor_dist="tanh_normal"))
    metrics = agent.train_step(torch.randn(8, 2), _toy_imagine, _toy_reward)
    assert torch.isfinite(metrics["actor_loss"]) and metrics["actor_grad_norm"] > 0


def test_slow_critic_is_copied_every_n_updates():
    torch.manual_seed(0)
    agent = ActorCritic(2, 2, BehaviorConfig(horizon=2, units=8, actor_layers=1, critic_layers=1,
                                             critic_lr=1e-2, slow_critic_every=3))
    slow = lambda: torch.cat([p.flatten() for p in agent.slow_critic.parameters()]).clone()  # noqa: E731
    fast = lambda: torch.cat([p.flatten() for p in agent.critic.parameters()]).clone()  # noqa: E731
    agent.train_step(torch.randn(8, 2), _toy_imagine, _toy_reward)  # update 0 copies
    torch.testing.assert_close(slow(), fast())
    agent.train_step(torch.randn(8, 2), _toy_imagine, _toy_reward)
    assert not torch.allclose(slow(), fast())
    agent.train_step(torch.randn(8, 2), _toy_imagine, _toy_reward)
    agent.train_step(torch.randn(8, 2), _toy_imagine, _toy_reward)  # update 3 copies
    torch.testing.assert_close(slow(), fast())


def _counting_imagine(policy, start, horizon):
    """Imagined state t has the 1-d feature t, whatever the actions; two rollouts."""
    features = torch.arange(horizon + 1.0).reshape(-1, 1, 1).expand(-1, 2, 1)
    actions = torch.stack([policy(features[t]) for t in range(horizon)])
    return Imagination(features, actions)


@pytest.mark.parametrize("states, rewards, returns, actor_loss", [
    # next: r_t = r(s_{t+1}); R_t = r_t + 0.5 R_{t+1}; a_t scored by R_t, t = 0, 1, 2
    ("next", [1.0, 2.0, 3.0], [2.75, 3.5, 3.0], -(2.75 + 0.5 * 3.5 + 0.25 * 3.0) / 3),
    # current (DreamerV2): r_t = r(s_t); a_t scored by R_{t+1}, t = 0, 1 (feat[:-2], target[1:])
    ("current", [0.0, 1.0, 2.0], [1.0, 2.0, 2.0], -(2.0 + 0.5 * 2.0) / 2),
])
def test_imagined_rewards_are_read_at_the_configured_states(states, rewards, returns, actor_loss):
    torch.manual_seed(0)
    config = BehaviorConfig(horizon=3, gamma=0.5, lambda_=1.0, units=4, actor_layers=1,
                            critic_layers=1, actor_entropy=0.0, imagined_reward_states=states)
    agent = ActorCritic(1, 1, config)
    for parameter in agent.slow_critic.parameters():  # v = 0: R_t = sum_i 0.5^i r_{t+i}
        parameter.data.zero_()
    seen = {}

    def reward_of_state(trajectory):  # the reward of a state is its feature
        seen["rewards"] = trajectory.scored_features()[..., 0]
        return seen["rewards"]

    metrics = agent.train_step(torch.zeros(2, 1), _counting_imagine, reward_of_state)
    assert seen["rewards"][:, 0].tolist() == rewards
    assert metrics["imagined_return"].item() == pytest.approx(returns[0])
    trajectory = _counting_imagine(lambda features: torch.zeros(2, 1), None, 3)
    hand_returns = torch.tensor(returns)[:, None].expand(3, 2)
    weights = torch.tensor([1.0, 0.5, 0.25])[:, None].expand(3, 2)  # prod of discounts to s_t
    loss, _ = agent._actor_loss(trajectory, hand_returns, torch.zeros(4, 2), weights)
    assert loss.item() == pytest.approx(actor_loss)
    with pytest.raises(ValueError, match="horizon"):
        ActorCritic(1, 1, BehaviorConfig(horizon=1, imagined_reward_states="current"))


def test_scored_states_pick_the_penalty_states_of_an_imagination():
    rssm = make_rssm(ensemble=3)
    start = rssm.initial(2)
    imagination = rssm.imagine(lambda features: torch.zeros(2, 2), start, 3)
    for scored, steps in (("next", slice(1, None)), ("current", slice(None, -1))):
        imagination.scored = scored
        expected = state_disagreement(
            rssm, {key: value[steps] for key, value in imagination.states.items()}, "semopo_code")
        torch.testing.assert_close(imagination_disagreement(rssm, imagination, "semopo_code"),
                                   expected)
        torch.testing.assert_close(imagination.scored_features(), imagination.features[steps])


def test_behaviour_update_leaves_world_model_untouched():
    torch.manual_seed(0)
    model = WorldModel(2, WorldModelConfig(**TINY_MODEL, ensemble=3, seed=0))
    post = model.rssm.observe(torch.randn(2, 3, model.encoder.output_dim), torch.randn(2, 3, 2),
                              torch.zeros(2, 3, dtype=torch.bool))[0]
    before = [p.detach().clone() for p in model.parameters()]
    agent = ActorCritic(model.rssm.feature_dim, 2, BehaviorConfig(horizon=3, units=8, actor_layers=1, critic_layers=1))
    metrics = agent.train_step(flatten_states({k: v.detach() for k, v in post.items()}), model.imagine, model.reward)
    assert metrics["actor_grad_norm"] > 0
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_penalized_reward_plugs_into_behaviour_learning():
    torch.manual_seed(0)
    model = WorldModel(2, WorldModelConfig(**TINY_MODEL, ensemble=3, seed=0))
    post = model.rssm.observe(torch.randn(2, 3, model.encoder.output_dim), torch.randn(2, 3, 2),
                              torch.zeros(2, 3, dtype=torch.bool))[0]
    agent = ActorCritic(model.rssm.feature_dim, 2, BehaviorConfig(horizon=3, units=8, actor_layers=1, critic_layers=1))
    seen = {}

    def penalized_reward(trajectory):
        penalty = imagination_disagreement(model.rssm, trajectory, "semopo_code")
        seen["penalty"] = penalty
        return model.reward(trajectory) - 5.0 * penalty

    start = flatten_states({k: v.detach() for k, v in post.items()})
    metrics = agent.train_step(start, model.imagine, penalized_reward)
    assert seen["penalty"].shape == (3, 6) and bool((seen["penalty"] > 0).all())
    assert torch.isfinite(metrics["actor_loss"])


# ------------------------------------------------------------------------------------ training


def _moving_square_batch(generator, batch=4, length=6):
    """Sequences of a bright square that moves right by the action; reward = square's x / 64."""
    images = torch.zeros(batch, length, 64, 64, 3, dtype=torch.uint8)
    actions = torch.rand(batch, length, 1, generator=generator) * 2 - 1
    actions[:, 0] = 0
    x = torch.randint(8, 40, (batch,), generator=generator).float()
    rewards = torch.zeros(batch, length)
    for t in range(length):
        x = (x + 4 * actions[:, t, 0]).clamp(0, 52)
        for b in range(batch):
            left = int(x[b])
            images[b, t, 24:36, left:left + 12] = 255
        rewards[:, t] = x / 64
    is_first = torch.zeros(batch, length, dtype=torch.bool)
    is_first[:, 0] = True
    return {"image": images, "action": actions, "reward": rewards, "is_first": is_first}


@pytest.mark.parametrize("classes", [None, 4])
def test_world_model_training_lowers_the_loss(classes):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    batches = [_moving_square_batch(generator) for _ in range(2)]
    config = WorldModelConfig(**{**TINY_MODEL, "classes": classes}, lr=1e-3)
    model = WorldModel(1, config)

    def mean_loss():
        with torch.no_grad():
            torch.manual_seed(1)
            return sum(model.loss(b)[0].item() for b in batches) / len(batches)

    # The image likelihood's normalizer, 0.5 * log(2 pi) per pixel and channel, cannot be learned.
    constant = 64 * 64 * 3 * 0.5 * math.log(2 * math.pi)
    before = mean_loss() - constant
    for step in range(25):
        post, metrics = model.train_step(batches[step % 2])
    after = mean_loss() - constant
    assert after < 0.6 * before, (before, after)
    assert post["deter"].shape == (4, 6, 16) and not post["deter"].requires_grad


def _moving_point_states(generator, batch=4, length=8):
    """State sequences (position, velocity) of a point pushed by the action; reward = position."""
    batch_data = _moving_square_batch(generator, batch, length)
    position = batch_data["reward"]
    velocity = torch.cat([torch.zeros(batch, 1), position.diff(dim=1)], 1)
    return {**{k: v for k, v in batch_data.items() if k != "image"},
            "state": torch.stack([position, velocity], -1)}


def test_state_world_model_likelihood_is_unit_normal_over_the_state_entries():
    model = WorldModel(1, WorldModelConfig(**TINY_MODEL, state_dim=2))
    features = torch.randn(3, model.rssm.feature_dim)
    target = torch.tensor([[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]])
    mean = model.decoder(features)
    expected = (-0.5 * (target - mean).pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert torch.allclose(model.observation_log_prob(features, target), expected)
    assert isinstance(model.encoder, MLP) and model.encoder.output_dim == TINY_MODEL["units"]


def test_state_world_model_training_lowers_the_loss_and_needs_the_state_key():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    batches = [_moving_point_states(generator) for _ in range(2)]
    model = WorldModel(1, WorldModelConfig(**TINY_MODEL, state_dim=2, lr=3e-3))

    def state_log_prob():
        with torch.no_grad():
            torch.manual_seed(1)
            return sum(model.loss(b)[2]["state_log_prob"].item() for b in batches) / 2

    # -log(2 pi) per step is the best possible; start and end are measured against it
    best = -math.log(2 * math.pi)
    before = best - state_log_prob()
    for step in range(40):
        post, metrics = model.train_step(batches[step % 2])
    assert best - state_log_prob() < 0.3 * before
    assert model.decode(post).shape == (4, 8, 2)
    with pytest.raises(KeyError, match="state"):
        model.loss(_moving_square_batch(generator))


def test_world_model_rejects_batches_without_required_keys():
    model = WorldModel(1, WorldModelConfig(**TINY_MODEL))
    with pytest.raises(KeyError, match="is_first"):
        model.loss({"image": random_images(1, 2), "action": torch.zeros(1, 2, 1), "reward": torch.zeros(1, 2)})


def test_world_model_accepts_numpy_batches_and_all_head_kl():
    generator = torch.Generator().manual_seed(0)
    batch = {k: v.numpy() for k, v in _moving_square_batch(generator, 2, 3).items()}
    model = WorldModel(1, WorldModelConfig(**TINY_MODEL, ensemble=3, ensemble_kl="all", seed=0))
    loss, post, metrics = model.loss(batch)
    assert torch.isfinite(loss) and post["stoch"].shape == (2, 3, 4, 4)


# ------------------------------------------------------------------------------------ optim


def test_optimizer_clips_gradient_norm_and_counts_parameters():
    layer = torch.nn.Linear(3, 2)
    assert count_parameters(layer) == 3 * 2 + 2
    optimizer = Optimizer("test", layer, lr=0.1, clip=1e-3)
    before = layer.weight.detach().clone()
    metrics = optimizer.step((layer(torch.ones(4, 3)) * 1000).sum())
    assert metrics["test_grad_norm"] > 1e-3  # the norm before clipping is reported
    total = torch.cat([p.grad.flatten() for p in layer.parameters()]).norm()
    assert total.item() == pytest.approx(1e-3, rel=1e-4)
    assert not torch.equal(before, layer.weight)


def test_apply_gradients_updates_exactly_like_step_on_the_same_loss():
    torch.manual_seed(0)
    stepped, applied = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    applied.load_state_dict(stepped.state_dict())
    inputs = torch.randn(4, 3)
    by_step = Optimizer("a", stepped, lr=0.1, clip=0.5)
    by_gradients = Optimizer("b", applied, lr=0.1, clip=0.5)
    norm_step = by_step.step((stepped(inputs) ** 2).sum())["a_grad_norm"]
    gradients = torch.autograd.grad((applied(inputs) ** 2).sum(), by_gradients.parameters)
    norm_applied = by_gradients.apply_gradients(gradients)["b_grad_norm"]
    assert norm_applied.item() == pytest.approx(norm_step.item())
    for a, b in zip(stepped.parameters(), applied.parameters()):
        assert torch.equal(a, b)


def test_apply_gradients_refuses_to_bypass_float16_loss_scaling():
    layer = torch.nn.Linear(3, 2)
    optimizer = Optimizer("scaled", layer, lr=0.1)
    # what precision="float16" builds on CUDA: an enabled GradScaler (here the CPU one)
    optimizer.scaler = torch.amp.GradScaler("cpu")
    gradients = torch.autograd.grad(layer(torch.ones(1, 3)).sum(), optimizer.parameters)
    before = layer.weight.detach().clone()
    with pytest.raises(RuntimeError, match="bfloat16"):
        optimizer.apply_gradients(gradients)
    assert torch.equal(before, layer.weight)


def _two_branches(scaled=False):
    """Two optimizers sharing ``shared`` (as SeMOPO's released branch optimizers share the joint
    mask decoder), eps 1 so that Adam's first step ``lr * g / (|g| + 1)`` shows the clipping."""
    a = torch.nn.Parameter(torch.tensor([1.0, 2.0]))   # first branch only
    b = torch.nn.Parameter(torch.tensor([3.0]))        # second branch only
    shared = torch.nn.Parameter(torch.tensor([0.5]))
    settings = dict(lr=0.1, eps=1.0, clip=1.0, weight_decay=0.1)
    first = Optimizer("first", [a, shared], **settings)
    second = Optimizer("second", [b, shared], **settings)
    if scaled:  # what precision="float16" builds on CUDA (here the CPU scaler)
        first.scaler, second.scaler = torch.amp.GradScaler("cpu"), torch.amp.GradScaler("cpu")
    return (a, b, shared), first, second


@pytest.mark.parametrize("scaled", [False, True])
def test_per_branch_optimizers_clip_and_decay_each_branch_on_its_own(scaled):
    (a, b, shared), first, second = _two_branches(scaled)
    loss_first = 12 * a[0] + 9 * shared[0]   # gradient norm 15, far above the clip 1
    loss_second = 0.3 * b[0] + 0.4 * shared[0]  # gradient norm 0.5, under it
    metrics = step_together((first, loss_first), (second, loss_second))
    assert metrics["first_grad_norm"].item() == pytest.approx(15.0)
    assert metrics["second_grad_norm"].item() == pytest.approx(0.5)

    def adam(gradient):  # Adam's first step with eps 1: lr * g / (|g| + eps)
        return 0.1 * gradient / (abs(gradient) + 1.0)

    # each group: clip its own norm, multiply by 1 - 0.1 (DreamerV2, before the step), then step;
    # the shared parameter is decayed and stepped by both, the first optimizer first
    expected = {
        "a": [1.0 * 0.9 - adam(12 / 15), 2.0 * 0.9],  # a[1] has no gradient: decay only
        "b": [3.0 * 0.9 - adam(0.3)],                  # unclipped
        "shared": [(0.5 * 0.9 - adam(9 / 15)) * 0.9 - adam(0.4)],
    }
    for name, parameter in (("a", a), ("b", b), ("shared", shared)):
        assert parameter.tolist() == pytest.approx(expected[name], rel=1e-5), name
    # one optimizer over everything clips the joint norm instead, which also shrinks b's step
    (a, b, shared), _, _ = _two_branches()
    joint = Optimizer("joint", [a, b, shared], lr=0.1, eps=1.0, clip=1.0, weight_decay=0.1)
    joint.step(12 * a[0] + 9 * shared[0] + 0.3 * b[0] + 0.4 * shared[0])
    norm = math.sqrt(12 ** 2 + 0.3 ** 2 + 9.4 ** 2)
    assert b.item() == pytest.approx(3.0 * 0.9 - adam(0.3 / norm), rel=1e-5)
    assert b.item() != pytest.approx(expected["b"][0], rel=1e-3)


def test_autocast_is_a_no_op_on_cpu_and_rejects_unknown_precisions():
    with autocast("cpu", "float16"):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        autocast("cpu", "float8")
