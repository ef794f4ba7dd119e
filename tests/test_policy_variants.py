"""benchmarks/policy_variants.py: a fresh actor-critic under config overrides on a frozen model."""

from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import load_benchmark_script
from baselines.offline_dv2 import OfflineDV2Agent, OfflineDV2Config
from lqv_d4rl.synthetic import noise_batch

torch.set_num_threads(1)

TINY = dict(batch_size=2, seq_len=6, depth=4, deter=16, stoch=4, classes=4, hidden=16,
            ensemble=3, units=32, reward_layers=1, actor_layers=1, critic_layers=1, horizon=2)


@pytest.fixture
def script(monkeypatch):
    """The script as a module (it imports its sibling scripts, as it does when run)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    return load_benchmark_script("policy_variants")


def tiny_agent():
    torch.manual_seed(0)
    return OfflineDV2Agent(6, OfflineDV2Config(**TINY))


def batches():
    """An endless stream of the same tiny noise batch, as tensors."""
    batch = {key: torch.as_tensor(value) for key, value in noise_batch(2, 6, 6).items()}
    return lambda: batch


def test_a_variant_changes_the_config_and_the_actor_critic_and_refuses_unknown_names(script):
    agent = tiny_agent()
    script.with_variant(agent, {"horizon": 3, "penalty_lambda": 2.0, "actor_grad": "reinforce"})
    assert agent.config.horizon == 3 and agent.config.penalty_lambda == 2.0
    assert agent.behavior.config.horizon == 3
    assert agent.behavior.config.actor_grad == "reinforce"  # not a field of OfflineDV2Config
    assert agent.policy_updates == 0
    with pytest.raises(ValueError, match="unknown setting.*horizn"):
        script.with_variant(tiny_agent(), {"horizn": 3})


def test_a_penalty_variant_changes_the_penalty_the_frozen_model_scores(script):
    from lqv_d4rl.networks.losses import imagination_disagreement

    agent = tiny_agent()
    start = agent.start_states(batches()())
    torch.manual_seed(1)
    imagination = agent.behavior.imagine(agent.world_model.imagine, start)
    meandis = imagination_disagreement(agent.world_model.rssm, imagination, "semopo_code")
    log_prob = imagination_disagreement(agent.world_model.rssm, imagination, "lompo")
    assert not torch.allclose(meandis, log_prob)
    _, _, penalty = agent.penalized_reward(imagination)
    assert torch.allclose(penalty, meandis)  # the run's own: meandis
    script.with_variant(agent, {"penalty": "log_prob_ens", "penalty_lambda": 5.0})
    total, reward, penalty = agent.penalized_reward(imagination)
    assert torch.allclose(penalty, log_prob)
    assert torch.allclose(total, reward - 5.0 * log_prob)


def test_training_a_variant_logs_rows_evaluates_and_repeats_with_the_seed(script):
    def run():
        agent = script.with_variant(tiny_agent(), {"actor_lr": 1e-3})
        before = [p.detach().clone() for p in agent.behavior.actor.parameters()]
        evaluated = []
        rows = script.train_variant(agent, batches(), 5, log_every=2, eval_every=4,
                                    evaluate=lambda trained: evaluated.append(1) or 7.0)
        moved = any(not torch.equal(a, b.detach())
                    for a, b in zip(before, agent.behavior.actor.parameters()))
        return rows, evaluated, moved

    rows, evaluated, moved = run()
    assert [row["updates"] for row in rows] == [2, 4, 5]  # every 2, and the last
    assert [row.get("eval_return") for row in rows] == [None, 7.0, 7.0]
    assert len(evaluated) == 2 and moved
    for row in rows:
        assert set(script.LOGGED) <= set(row) and 0.0 <= row["saturated_share"] <= 1.0
    again, _, _ = run()
    strip = [{k: v for k, v in row.items() if k != "cpu_s"} for row in rows]
    assert strip == [{k: v for k, v in row.items() if k != "cpu_s"} for row in again]


@pytest.mark.parametrize("bias, share", [(10.0, 1.0), (0.5, 0.0), (-10.0, 1.0)])
def test_the_saturated_share_counts_mode_components_beyond_095(script, bias, share):
    agent = tiny_agent()
    last = [module for module in agent.behavior.actor.modules() if isinstance(module, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(bias)  # the mode is tanh(bias) everywhere: 1.0, 0.46, -1.0
    assert script.actor_saturated_share(agent, batches()()) == share


def test_variants_are_parsed_as_name_equals_json_object(script):
    import argparse

    assert script.parse_variant("paper={}") == ("paper", {})
    assert script.parse_variant('h15={"horizon": 15}') == ("h15", {"horizon": 15})
    assert script.parse_variant("paper") == ("paper", {})
    for bad in ("h15={horizon: 15}", "=[]", "x=[1]"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME=JSON"):
            script.parse_variant(bad)
