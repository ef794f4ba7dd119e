"""The GPU path, checked on a CPU: no host syncs in the training updates, checkpoints that restore on
any device, and the straight-through categorical that makes the first possible.

Host syncs are counted with :func:`lqv_d4rl.host_syncs.count_host_syncs` on the ``meta`` device:
networks and batches live there as they would on a GPU, while the host-side tensors (the CPU
generators that draw ensemble heads, Adam's step counters) stay on the CPU, so every counted read
is one that would make the CPU wait for a GPU. A plain CPU run cannot tell the two kinds apart.
"""

import dataclasses
import io
import json

import pytest
import torch
import torch.distributions as td

import semopo
from lqv_d4rl import runs
from lqv_d4rl.host_syncs import count_host_syncs
from lqv_d4rl.networks import Optimizer, categorical_latent
from lqv_d4rl.networks.distributions import OneHotStraightThrough
from lqv_d4rl.runs import MetricMeter, rng_state, set_rng_state
from lqv_d4rl.synthetic import noise_batch
from semopo.agent import SeMOPOAgent

TINY = dict(batch_size=2, seq_len=6, depth=4, deter=16, stoch=4, classes=4, hidden=16,
            ensemble=3, exo_ensemble=3, units=16, reward_layers=1, actor_layers=1,
            critic_layers=1, horizon=5, precision="float32")


def on(device, batch):
    """The batch as tensors on ``device``."""
    return {key: torch.as_tensor(value).to(device) for key, value in batch.items()}


# ------------------------------------------------------------------------------------ the latent


def test_straight_through_categorical_has_the_math_of_one_hot_categorical():
    torch.manual_seed(0)
    logits, other = torch.randn(5, 3, 6) * 2, torch.randn(5, 3, 6)
    mine, reference = OneHotStraightThrough(logits), td.OneHotCategorical(logits=logits)
    value = reference.sample()
    torch.testing.assert_close(mine.log_prob(value), reference.log_prob(value))
    torch.testing.assert_close(mine.entropy(), reference.entropy())
    torch.testing.assert_close(mine.mean, reference.mean)
    torch.testing.assert_close(mine.mode.detach(), reference.mode)
    torch.testing.assert_close(td.kl_divergence(mine, OneHotStraightThrough(other)),
                               td.kl_divergence(reference, td.OneHotCategorical(logits=other)))
    # an impossible class of q where p has mass: infinite KL, as torch's own
    impossible = other.clone()
    impossible[0, 0, 0] = -float("inf")
    assert torch.isinf(td.kl_divergence(mine, OneHotStraightThrough(impossible))[0, 0])
    # log_prob broadcasts a sample against an ensemble of heads (the LOMPO penalty)
    heads = torch.randn(4, 5, 3, 6)
    torch.testing.assert_close(categorical_latent(heads).log_prob(value),
                               td.Independent(td.OneHotCategorical(logits=heads), 1).log_prob(value))


def test_straight_through_samples_follow_the_class_probabilities():
    torch.manual_seed(1)
    probs = torch.tensor([0.6, 0.3, 0.1, 0.0])
    samples = OneHotStraightThrough(probs.log()).sample((40_000,))
    assert samples.sum(-1).eq(1).all() and samples[:, 3].eq(0).all()  # one-hot, never the 0 class
    frequencies = samples.mean(0)
    # 40,000 draws: the standard error of each frequency is below 0.0025
    torch.testing.assert_close(frequencies, probs, atol=0.01, rtol=0)


def test_building_and_sampling_the_latent_reads_nothing_from_the_device():
    logits = torch.randn(64, 32, 32, device="meta", requires_grad=True)
    with count_host_syncs("meta") as syncs:
        dist = categorical_latent(logits)
        sample = dist.rsample()
        dist.log_prob(sample), dist.entropy(), dist.mode
        td.kl_divergence(dist, categorical_latent(logits.detach()))
    assert syncs.total == 0, syncs.where


def test_the_counter_sees_what_would_wait_for_the_gpu():
    tensor = torch.ones(3, device="meta")
    with count_host_syncs("meta") as syncs:
        bool(tensor.sum() > 0), tensor[0].item(), int(tensor[1]), tensor.tolist(), tensor.cpu()
        torch.ones(3).to("meta"), torch.ones(3).to("meta", non_blocking=True)  # only one waits
        torch.ones(()).item(), torch.ones(2).tolist()  # host tensors: no device wait
    assert dict(syncs.by_kind) == {"bool": 1, "item": 1, "scalar": 1, "tolist": 1, "to_host": 1,
                                   "from_host": 1}
    assert all(where.startswith("tests/test_gpu_path.py") for _, where in syncs.where)
    with count_host_syncs("meta") as syncs:
        # torch's own one-hot categorical: the validation of its inner Categorical (whatever
        # validate_args says) and torch.multinomial
        td.OneHotCategorical(logits=torch.zeros(2, 3, device="meta"), validate_args=False).sample()
    assert syncs.by_kind["bool"] == 1 and syncs.by_kind["aten::multinomial"] == 1


# ------------------------------------------------------------------------------------ updates


def assert_no_sync_in_the_update(syncs, name):
    assert syncs.total == 0, f"{name} waits for the device {syncs.total} times: " \
                             f"{syncs.where.most_common(5)}"


def test_a_semopo_model_update_of_50_steps_reads_nothing_back():
    config = semopo.SeMOPOConfig(**{**TINY, "seq_len": 50})  # the paper's sequence length
    agent = SeMOPOAgent(6, config, device="meta", seed=0)
    batch = on("meta", noise_batch(config.batch_size, config.seq_len, 6, seed=0))
    with count_host_syncs("meta") as syncs:
        agent.train_model_step(batch)
    assert_no_sync_in_the_update(syncs, "a model update of 2 x 50 RSSM steps")


@pytest.mark.parametrize("changes, phases", [
    ({}, ("model", "policy")), ({"separated": False}, ("model", "policy")),
    ({"penalty": "semopo_code"}, ("policy",)), ({"penalty": "lompo"}, ("policy",)),
], ids=["separated-paper-penalty", "joint-model", "released-penalty", "lompo-penalty"])
def test_semopo_updates_read_nothing_back_and_logging_reads_once(changes, phases):
    torch.manual_seed(0)
    config = semopo.SeMOPOConfig(**{**TINY, **changes})
    agent = SeMOPOAgent(6, config, device="meta", seed=0)
    batch = on("meta", noise_batch(config.batch_size, config.seq_len, 6, seed=0))
    updates = {"model": agent.train_model_step, "policy": agent.train_policy_step}
    for name, update in ((f"{phase} update", updates[phase]) for phase in phases):
        meter = MetricMeter()
        with count_host_syncs("meta") as syncs:
            for _ in range(2):
                meter.add(update(batch))
        assert_no_sync_in_the_update(syncs, name)
        with count_host_syncs("meta") as syncs:
            meter.flush()
        assert syncs.total == 1, syncs.where  # one transfer per logged row


def test_tia_update_reads_nothing_back():
    from collectors.tia import TIAAgent, TIAConfig, synthetic_batch

    config = dataclasses.replace(TIAConfig.smoke(), batch_size=2, seq_len=6)
    agent = TIAAgent(config, 6, device="meta", seed=0)
    batch = on("meta", synthetic_batch(config, 6))
    with count_host_syncs("meta") as syncs:
        metrics = agent.update(batch)
    assert_no_sync_in_the_update(syncs, "TIA update")
    assert {"model_loss", "actor_loss"} <= set(metrics)


def test_the_device_resident_sampler_gathers_a_batch_without_waiting(tmp_path):
    from conftest import write_tiny_dataset
    from lqv_d4rl.dataset import load_dataset
    from lqv_d4rl.torch_data import make_device_sampler

    dataset = load_dataset(write_tiny_dataset(tmp_path / "walker_walk-medrep"))
    sampler = make_device_sampler(dataset, device="meta", batch_size=2, seq_len=4)
    with count_host_syncs("meta") as syncs:
        batch = sampler.sample()
    assert syncs.total == 0, syncs.where
    assert batch["image"].shape == (2, 4, 64, 64, 3) and batch["image"].device.type == "meta"


def test_tia_replay_batches_drawn_ahead_are_the_batches_of_sample():
    from collectors.replay import EpisodeReplay
    from conftest import make_episode

    replays = [EpisodeReplay(6, seed=4), EpisodeReplay(6, seed=4)]
    for replay in replays:
        for index in range(3):
            replay.add_episode(make_episode(12, 6, seed=index), policy_id="random")
    expected = [replays[0].sample(2, 5) for _ in range(4)]
    with replays[1].batches(4, 2, 5) as batches:
        got = list(batches)
    assert len(got) == 4
    for mine, theirs in zip(got, expected):
        for key, value in theirs.items():
            assert torch.equal(mine[key], torch.as_tensor(value)), key
    assert replays[0].rng.bit_generator.state == replays[1].rng.bit_generator.state


# ------------------------------------------------------------------------------------ checkpoints


class CheckedGenerator(torch.Generator):
    """A generator that insists on the CPU byte tensor ``set_state`` needs (on every device)."""

    def set_state(self, state):
        assert state.dtype == torch.uint8 and state.device.type == "cpu", (state.dtype, state.device)
        return super().set_state(state)


def trained_agent(**changes):
    torch.manual_seed(0)
    config = semopo.SeMOPOConfig(**{**TINY, **changes})
    agent = SeMOPOAgent(6, config, device="cpu", seed=3)
    batch = noise_batch(config.batch_size, config.seq_len, 6, seed=0)
    agent.train_model_step(batch)
    agent.train_policy_step(batch)
    return agent


def saved_and_loaded(state):
    """``state`` written with torch.save and read back the way the platform reads checkpoints."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, map_location="cpu", weights_only=True)


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_cpu_saved_semopo_checkpoint_restores_on_another_device(device, monkeypatch, tmp_path):
    agent = trained_agent()
    torch.manual_seed(7)
    (tmp_path / "run").mkdir()
    run = runs.Run(tmp_path / "run", algorithm="semopo", config=agent.config, seed=3, device="cpu",
                   record={})
    run.save_checkpoint({"agent": agent.state_dict(), "rng": rng_state()})
    state = run.load_checkpoint()

    restored = SeMOPOAgent(6, agent.config, device=device, seed=3)
    for rssm in (restored.world_model.rssm, restored.world_model.exo_rssm):
        rssm.generator = CheckedGenerator()
    restored.load_state_dict(state["agent"])
    checked = []
    monkeypatch.setattr(torch, "set_rng_state", lambda value: checked.append(value))
    set_rng_state(state["rng"])
    assert checked and all(s.dtype == torch.uint8 and s.device.type == "cpu" for s in checked)

    assert all(p.device.type == device for p in restored.world_model.parameters())
    assert all(p.device.type == device for p in restored.behavior.parameters())
    for optimizer in (restored.world_model.optimizer, restored.behavior.actor_opt,
                      restored.behavior.critic_opt):
        for parameter, values in optimizer.optimizer.state.items():
            assert values["step"].device.type == "cpu"  # read on the host, never waited for
            assert values["exp_avg"].device == parameter.device
    for mine, theirs in zip((agent.world_model.rssm, agent.world_model.exo_rssm),
                            (restored.world_model.rssm, restored.world_model.exo_rssm)):
        assert torch.equal(mine.generator.get_state(), theirs.generator.get_state())
    if device == "cpu":
        for key, value in agent.world_model.state_dict().items():
            assert torch.equal(value, restored.world_model.state_dict()[key]), key


def test_a_float16_run_resumes_where_loss_scaling_is_on():
    agent = trained_agent(precision="float16")  # on the CPU: no autocast, no loss scaling
    state = saved_and_loaded(agent.state_dict())
    assert state["model_optimizer"]["scaler"] == {}
    restored = SeMOPOAgent(6, agent.config, device="cpu", seed=3)
    for optimizer in (restored.world_model.optimizer, restored.behavior.actor_opt,
                      restored.behavior.critic_opt):
        # what a float16 run on a GPU has: an active scaler
        optimizer.scaler = torch.amp.GradScaler("cpu", enabled=True)
    restored.load_state_dict(state)
    assert restored.world_model.optimizer.scaler.get_scale() == 2.0 ** 16  # a fresh scaler's
    restored.train_model_step(noise_batch(2, TINY["seq_len"], 6, seed=1))


def test_loading_keeps_the_optimizers_own_implementation():
    layer = torch.nn.Linear(3, 2)
    saved = Optimizer("net", layer, 1e-3)
    saved.step(layer(torch.randn(4, 3)).pow(2).sum())
    state = saved_and_loaded(saved.state_dict())
    fused = Optimizer("net", torch.nn.Linear(3, 2), 1e-3)
    fused.optimizer = torch.optim.Adam(fused.parameters, lr=1e-3, fused=True)  # as on CUDA
    fused.load_state_dict(state)
    assert fused.optimizer.param_groups[0]["fused"] is True
    unfused = Optimizer("net", torch.nn.Linear(3, 2), 1e-3)
    state["optimizer"]["param_groups"][0]["fused"] = True  # a checkpoint of a CUDA run
    unfused.load_state_dict(state)
    assert not unfused.optimizer.param_groups[0]["fused"]
    assert all(values["step"].device.type == "cpu" for values in unfused.optimizer.state.values())


# ------------------------------------------------------------------------------------ --device


def commands_with_a_device_option():
    """``{"verb [sub]": argv prefix}`` of every command of ``lqv-d4rl`` that takes ``--device``
    (the ``train`` subcommand of every installed algorithm included)."""
    import click

    from lqv_d4rl.cli import main

    found = {}

    def visit(command, path, parent):
        context = click.Context(command, info_name=path[-1] if path else "lqv-d4rl", parent=parent)
        if isinstance(command, click.Group):
            for name in command.list_commands(context):
                visit(command.get_command(context, name), [*path, name], context)
        elif any(param.name == "device" for param in command.params):
            found[" ".join(path)] = path

    visit(main, [], None)
    return found


def test_a_gpu_that_is_not_there_is_one_line_for_every_verb():
    from click.testing import CliRunner

    from lqv_d4rl.cli import main

    missing = f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 1}"
    verbs = commands_with_a_device_option()
    assert {"generate", "evaluate", "analyse", "train semopo", "semopo"} <= set(verbs)
    for name, path in verbs.items():
        result = CliRunner().invoke(main, [*path, "--device", missing])
        assert result.exit_code == 2, (name, result.output)
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "Traceback" not in result.output, (name, result.output)
        assert f"device {missing!r} was asked for but torch sees" in errors[0], (name, errors)
        assert "--device cpu" in errors[0]
        result = CliRunner().invoke(main, [*path, "--device", "gpu"])
        assert result.exit_code == 2 and "is no torch device; use cpu, cuda or cuda:N" in \
            result.output, (name, result.output)


def test_training_on_a_gpu_that_is_not_there_fails_before_the_run_folder_exists(tmp_path):
    from lqv_d4rl.torch_data import DeviceUnavailableError

    missing = f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 1}"
    with pytest.raises(DeviceUnavailableError, match="was asked for but torch sees"):
        runs.Run.open(tmp_path / "run", semopo.ALGORITHM, semopo.SeMOPOConfig(**TINY), None,
                      device=missing)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------ benchmark


def load_bench_gpu():
    from conftest import load_benchmark_script

    return load_benchmark_script("bench_gpu")


def test_the_gpu_benchmark_says_there_is_no_gpu_and_exits(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert load_bench_gpu().main([]) == []
    assert "no CUDA GPU here" in capsys.readouterr().out


@pytest.mark.slow
def test_the_gpu_benchmark_runs_every_algorithm_and_variant_on_a_cpu(capsys):
    from lqv_d4rl import algorithms

    bench = load_bench_gpu()
    results = bench.main(["--device", "cpu", "--quick", "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == json.loads(json.dumps(results))
    measured = {(r["algorithm"], r["precision"], r["compile"]) for r in results}
    for name in algorithms.names():
        for precision in ("float32", "bfloat16"):
            for compiled in ("off", "eager"):
                assert (name, precision, compiled) in measured
    for result in results:
        assert result["projected_hours"] > 0, result
        for row in result["phases"]:
            assert row["updates_per_second"] > 0 and row["total"] > 0, result
            assert row["peak_memory_gib"] > 0
            if result["compile"] != "off":
                assert row["compiled_modules"] > 0, result


def test_fused_adam_with_loss_scaling_skips_the_steps_with_inf_gradients():
    # what Optimizer builds for a float16 run on CUDA, with the CPU's fused Adam and scaler: the
    # scaler hands its inf flag to the fused kernel instead of reading it on the host
    layer = torch.nn.Linear(3, 1)
    optimizer = Optimizer("net", layer, 1e-2)
    optimizer.optimizer = torch.optim.Adam(optimizer.parameters, lr=1e-2, fused=True)
    optimizer.scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=4.0)
    before = [p.detach().clone() for p in layer.parameters()]
    optimizer.step(layer(torch.full((2, 3), float("inf"))).sum())
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters()))
    assert optimizer.scaler.get_scale() == 2.0  # backed off
    optimizer.step(layer(torch.ones(2, 3)).sum())
    assert not torch.equal(before[0], layer.weight)
