"""The sac-state recipe's two costs, each against a straightforward reference run in the same process.

Part 1, SAC updates/s (batch 256, 3 x 256 networks, one CPU thread): ``collectors.sac.SACAgent``
(both critics as one ensemble of batched matrix products, foreach Adam and Polyak averaging)
against a plain implementation in the style of V-D4RL's SAC code (two separate critic networks,
``torch.distributions`` tanh-Normal, a Python loop over parameters for the target update, default
Adam), with the same sizes, on the same batches.

Part 2, recorded agent steps/s (walker_walk, procedural driving video, the cpu preset's random
actor acting on states): the reference records as it plays, rendering every step in the live
environment (a) with dm_control's default render settings, as V-D4RL's gathering script did, and
(b) with this project's fast settings; the recipe (c) plays on the physics alone and renders the
episode afterwards from its stored physics states in this process, and (d) with 2 render worker
processes. Rates count recorded agent steps per wall-clock second. Usage::

    python benchmarks/bench_sac.py                  # 200 updates, 2 x 250-step episodes
    python benchmarks/bench_sac.py --updates 500 --steps 500 --episodes 4
"""

import os

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import distractors  # noqa: E402
import lqv_d4rl  # noqa: E402  (sets MUJOCO_GL)
from collectors.sac import SACAgent, SACConfig, SACPolicy, TransitionReplay  # noqa: E402

TASK = "walker_walk"
STATE_DIM, ACTION_DIM = 24, 6


# -- part 1: updates -------------------------------------------------------------------------------


def _mlp(inputs, outputs, units=256):
    return nn.Sequential(nn.Linear(inputs, units), nn.ReLU(), nn.Linear(units, units), nn.ReLU(),
                         nn.Linear(units, units), nn.ReLU(), nn.Linear(units, outputs))


class ReferenceSAC:
    """SAC written the straightforward way (two critic modules, torch.distributions, a parameter
    loop for Polyak averaging), the shape of V-D4RL's behaviour-policy code."""

    def __init__(self, lr=3e-4, gamma=0.99, tau=0.005):
        torch.manual_seed(0)
        self.q1, self.q2 = _mlp(STATE_DIM + ACTION_DIM, 1), _mlp(STATE_DIM + ACTION_DIM, 1)
        self.target_q1, self.target_q2 = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        self.policy = _mlp(STATE_DIM, 2 * ACTION_DIM)
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.q_optimizer = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=lr)
        self.policy_optimizer = torch.optim.Adam(self.policy.parameters(), lr=lr)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=lr)
        self.gamma, self.tau = gamma, tau

    def _sample(self, state):
        mean, log_std = self.policy(state).chunk(2, dim=1)
        dist = torch.distributions.TransformedDistribution(
            torch.distributions.Normal(mean, log_std.clamp(-20, 2).exp()),
            [torch.distributions.transforms.TanhTransform(cache_size=1)])
        action = dist.rsample()
        return action, dist.log_prob(action).sum(-1, keepdim=True)

    def update(self, batch):
        state, action, next_state = batch["state"], batch["action"], batch["next_state"]
        reward, done = batch["reward"].unsqueeze(1), batch["done"].unsqueeze(1)
        alpha = self.log_alpha.exp()
        with torch.no_grad():
            next_action, next_log_prob = self._sample(next_state)
            next_input = torch.cat([next_state, next_action], 1)
            next_q = torch.min(self.target_q1(next_input), self.target_q2(next_input))
            target = reward + (1 - done) * self.gamma * (next_q - alpha * next_log_prob)
        inputs = torch.cat([state, action], 1)
        q_loss = nn.functional.mse_loss(self.q1(inputs), target) + \
            nn.functional.mse_loss(self.q2(inputs), target)
        self.q_optimizer.zero_grad()
        q_loss.backward()
        self.q_optimizer.step()
        for p in [*self.q1.parameters(), *self.q2.parameters()]:
            p.requires_grad = False
        new_action, log_prob = self._sample(state)
        new_input = torch.cat([state, new_action], 1)
        policy_loss = (alpha.detach() * log_prob -
                       torch.min(self.q1(new_input), self.q2(new_input))).mean()
        self.policy_optimizer.zero_grad()
        policy_loss.backward()
        self.policy_optimizer.step()
        alpha_loss = -(self.log_alpha.exp() * (log_prob.detach() - ACTION_DIM)).mean()
        self.alpha_optimizer.zero_grad()
        alpha_loss.backward()
        self.alpha_optimizer.step()
        for p in [*self.q1.parameters(), *self.q2.parameters()]:
            p.requires_grad = True
        with torch.no_grad():
            for target_net, net in ((self.target_q1, self.q1), (self.target_q2, self.q2)):
                for target_p, p in zip(target_net.parameters(), net.parameters()):
                    target_p.data.copy_(self.tau * p.data + (1 - self.tau) * target_p.data)


def random_replay(state_dim, action_dim, episodes=20):
    """A TransitionReplay of ``episodes`` 500-step episodes of random numbers (shapes only)."""
    rng = np.random.default_rng(0)
    replay = TransitionReplay(state_dim, action_dim, episodes * 500, seed=0)
    for _ in range(episodes):
        replay.add_episode({"state": rng.normal(size=(501, state_dim)),
                            "action": rng.uniform(-1, 1, (501, action_dim)),
                            "reward": rng.random(501), "discount": np.ones(501)})
    return replay


def bench_updates(args):
    torch.set_num_threads(1)
    replay = random_replay(STATE_DIM, ACTION_DIM)
    batches = [replay.sample(256) for _ in range(args.updates)]
    learners = {"reference (two critics, distributions, param loop)": ReferenceSAC().update,
                "collectors.sac.SACAgent": SACAgent(SACConfig.cpu(), STATE_DIM, ACTION_DIM).update}
    best = {name: 0.0 for name in learners}
    for _ in range(args.repeats):  # interleaved: a busy machine slows both alike
        for name, update in learners.items():
            for batch in batches[:5]:
                update(batch)
            start = time.perf_counter()
            for batch in batches:
                update(batch)
            best[name] = max(best[name], len(batches) / (time.perf_counter() - start))
    reference = best[next(iter(best))]
    print(f"\nSAC updates/s (batch 256, 3 x 256, 1 thread, best of {args.repeats}):")
    for name, rate in best.items():
        print(f"  {name:55s} {rate:7.1f}  ({rate / reference:.2f}x)")


# -- part 2: recorded steps ----------------------------------------------------------------------


def record_live(pool, actor, args, render_quality):
    """The reference: play in the live environment, rendering every step."""
    env = lqv_d4rl.make_env(TASK, distractor=pool, render_quality=render_quality)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for episode in range(args.episodes):
        _, info = env.reset(seed=episode)
        for _ in range(args.steps):
            action = actor.act(info["state"], generator=generator)
            _, _, _, _, info = env.step(action)
    rate = args.episodes * args.steps / (time.perf_counter() - start)
    env.close()
    return rate


def record_recipe(pool, actor, args, workers):
    """The recipe: play on the physics alone, then render from the stored physics states."""
    from collectors.state_recipe import simulate_episode
    from lqv_d4rl.physics import StateSimulator
    from lqv_d4rl.rerender import EpisodeRenderer

    simulator = StateSimulator(TASK)
    with EpisodeRenderer(TASK, video_pool=pool, workers=workers) as renderer:
        list(renderer.render([(np.zeros((2, 18)), 0)] * max(workers, 1)))  # start the workers
        start = time.perf_counter()
        episodes = (simulate_episode(simulator, actor, seed, explore=True, noise_seed=seed,
                                     max_episode_steps=args.steps)
                    for seed in range(args.episodes))
        frames = sum(len(images) - 1 for images, _ in renderer.render(
            (episode.states["physics"], episode.seed) for episode in episodes))
        rate = frames / (time.perf_counter() - start)
    simulator.close()
    return rate


def bench_recording(args):
    torch.set_num_threads(1)
    pool = distractors.make_video_pool(None, num_frames=1000, seed=0)
    actor = SACPolicy.of(SACAgent(SACConfig.cpu(), STATE_DIM, ACTION_DIM, seed=0))
    runs = {"(a) live env, dm_control default render (V-D4RL's way)":
            lambda: record_live(pool, actor, args, "default"),
            "(b) live env, fast render": lambda: record_live(pool, actor, args, "fast"),
            "(c) physics only, then render from physics, 1 process":
            lambda: record_recipe(pool, actor, args, 1),
            "(d) physics only, then render from physics, 2 render workers":
            lambda: record_recipe(pool, actor, args, 2)}
    best = {name: 0.0 for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            best[name] = max(best[name], run())
    reference = best[next(iter(best))]
    print(f"\nrecorded agent steps/s ({TASK}, {args.episodes} x {args.steps}-step episodes, "
          f"best of {args.repeats}):")
    for name, rate in best.items():
        print(f"  {name:62s} {rate:7.1f}  ({rate / reference:.2f}x)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-recording", action="store_true")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    bench_updates(args)
    if not args.skip_recording:
        bench_recording(args)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
