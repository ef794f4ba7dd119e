"""Which "random" behaviour gives the paper's random level? Untrained policies, measured.

The random level of Table 3 has walker_walk mean 86.6 / max 199.1, cheetah_run mean 77.6 / max
198.2 and car_racing mean 10.3 / max 149.2. This plays candidate untrained behaviours on the
physics alone (no rendering; the returns are the datasets' returns) and prints their return
statistics next to Table 3's, so the choice of the CPU recipe's random level rests on
measurements:

* ``uniform``: uniform actions in [-1, 1] (the prefill of every training run);
* ``bang-bang``: tanh of N(0, 5^2) per dimension, what an untrained tanh-Normal actor with
  Dreamer-v1 / TIA's init std 5 samples when its mean is near 0;
* ``tia-like``: a randomly initialized TIA actor head (4 x 400 ELU, tanh-Normal, mean scale 5,
  init std 5) on the state, sampled, plus TIA's exploration noise 0.3;
* ``sac-untrained``: a randomly initialized SAC actor (the cpu preset's networks), sampled;
* ``held-5``: uniform actions each held for 5 agent steps (temporally correlated noise).

Each candidate plays ``--policies`` x ``--episodes`` episodes (distinct seeds per policy, as the
random level's 10 x 20). Usage: ``python benchmarks/random_behaviours.py walker_walk cheetah_run
[--policies 10] [--episodes 20] [--out docs/datasets] [--name random-behaviours]`` (car_racing's
record: ``--name random-behaviours-car_racing``).
"""

import argparse
import json
import sys
from pathlib import Path

import lqv_d4rl  # noqa: F401  (pins the CPU kernels before torch starts)
import torch
from collectors.sac import SACAgent, SACConfig, SACPolicy
from lqv_d4rl.car_racing import make_state_simulator
from lqv_d4rl.fidelity import format_verdicts, fidelity_verdicts
from lqv_d4rl.networks.heads import ActionHead
from lqv_d4rl.registry import get_recipe
from lqv_d4rl.stats import format_statistics_table, return_statistics
from run_info import git_commit


def uniform(state_dim, action_dim, generator):
    """Uniform actions in [-1, 1]."""
    return lambda state: (torch.rand(action_dim, generator=generator) * 2 - 1).numpy()


def bang_bang(state_dim, action_dim, generator):
    """tanh(N(0, 5^2)): nearly always -1 or +1."""
    return lambda state: torch.tanh(5 * torch.randn(action_dim, generator=generator)).numpy()


def tia_like(state_dim, action_dim, generator):
    """A randomly initialized TIA actor on the state, sampled, plus exploration noise 0.3."""
    layers, width = [], state_dim
    for _ in range(4):
        layers += [torch.nn.Linear(width, 400), torch.nn.ELU()]
        width = 400
    trunk = torch.nn.Sequential(*layers)
    head = ActionHead(400, action_dim, dist="tanh_normal")

    @torch.no_grad()
    def act(state):
        policy = head(trunk(torch.as_tensor(state, dtype=torch.float32)[None]))
        action = policy.sample()[0] + 0.3 * torch.randn(action_dim, generator=generator)
        return action.clamp(-1, 1).numpy()
    return act


def sac_untrained(state_dim, action_dim, generator):
    """A randomly initialized SAC actor (cpu preset sizes), sampling its Gaussian."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    policy = SACPolicy.of(SACAgent(SACConfig.cpu(), state_dim, action_dim, seed=seed))
    return lambda state: policy.act(state, deterministic=False, generator=generator)


def held(state_dim, action_dim, generator, hold=5):
    """Uniform actions, each held for ``hold`` agent steps."""
    memory = {"action": None, "steps": 0}

    def act(state):
        if memory["steps"] % hold == 0:
            memory["action"] = (torch.rand(action_dim, generator=generator) * 2 - 1).numpy()
        memory["steps"] += 1
        return memory["action"]
    return act


CANDIDATES = {"uniform": uniform, "bang-bang": bang_bang, "tia-like": tia_like,
              "sac-untrained": sac_untrained, "held-5": held}


def play(simulator, act, seed):
    """One episode's return."""
    state, _ = simulator.reset(seed=seed)
    total = 0.0
    while True:
        state, reward, terminated, truncated, _ = simulator.step(act(state))
        total += reward
        if terminated or truncated:
            return total


def measure(task, make, policies, episodes):
    """Returns of ``policies`` x ``episodes`` episodes of one candidate."""
    simulator = make_state_simulator(task)
    state_dim = len(simulator.reset(seed=0)[0])
    action_dim = simulator.action_space.shape[0]
    returns = []
    for p in range(policies):
        torch.manual_seed(1000 + p)  # the networks' initialization
        generator = torch.Generator().manual_seed(2000 + p)
        act = make(state_dim, action_dim, generator)
        returns += [play(simulator, act, seed=100_000 + 1000 * p + k) for k in range(episodes)]
    simulator.close()
    return returns


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="+")
    parser.add_argument("--policies", type=int, default=10)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--out", default="docs/datasets")
    parser.add_argument("--name", default="random-behaviours", help="the record's file name")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    record = {"command": "python benchmarks/random_behaviours.py " + " ".join(sys.argv[1:]),
              "commit": git_commit(), "results": {}}
    for task in args.tasks:
        rows, verdicts = [], []
        paper = get_recipe(f"{task}-random")
        rows.append((f"{task}-random (paper)", dict(paper.paper_returns, episodes=paper.episodes)))
        for name, make in CANDIDATES.items():
            returns = measure(task, make, args.policies, args.episodes)
            record["results"].setdefault(task, {})[name] = return_statistics(returns)
            rows.append((name, return_statistics(returns)))
            verdicts.append((name, [v for v in fidelity_verdicts(task, "random", returns)
                                    if v.statistic != "episodes"]))
        print(f"\n{task}: untrained behaviours, {args.policies} x {args.episodes} episodes")
        print(format_statistics_table(rows))
        print(format_verdicts(verdicts))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.name}.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
