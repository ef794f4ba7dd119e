"""lqv_d4rl.cpu_kernels: which CPU kernels are pinned, and that a user's kernel setting does not
change the bytes a recipe records."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lqv_d4rl.cpu_kernels import PINNED, cpu_has_avx2, kernel_settings, pin_cpu_kernels

REPO_ROOT = Path(__file__).resolve().parents[1]


def cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\n")
    return str(path)


def test_the_avx2_kernels_are_pinned_where_the_cpu_has_them(tmp_path):
    environ = {"ATEN_CPU_CAPABILITY": "default"}  # a stray setting is replaced, not kept
    assert pin_cpu_kernels(environ, cpuinfo=cpuinfo(tmp_path, "fpu sse2 avx fma avx2")) == PINNED
    assert environ == PINNED
    assert PINNED == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2",
                      "ONEDNN_MAX_CPU_ISA": "AVX2", "LP_NATIVE_VECTOR_WIDTH": "256"}


def test_nothing_is_pinned_without_avx2_or_when_turned_off(tmp_path):
    environ = {}
    assert pin_cpu_kernels(environ, cpuinfo=cpuinfo(tmp_path, "fpu sse2 avx")) == {}
    assert pin_cpu_kernels(environ, cpuinfo=str(tmp_path / "missing")) == {}
    assert environ == {}
    opted_out = {"LQV_D4RL_PIN_CPU_KERNELS": "0"}
    assert pin_cpu_kernels(opted_out, cpuinfo=cpuinfo(tmp_path, "avx2 fma")) == {}
    assert opted_out == {"LQV_D4RL_PIN_CPU_KERNELS": "0"}


def test_kernel_settings_report_what_is_in_effect():
    import torch  # noqa: F401  (loaded, so its kernel capability is reported)

    settings = kernel_settings()
    assert set(settings) == set(PINNED) | {"torch_cpu_capability"}
    if cpu_has_avx2() and os.environ.get("LQV_D4RL_PIN_CPU_KERNELS") != "0":
        assert {key: settings[key] for key in PINNED} == PINNED


EPISODE = """
import hashlib
import lqv_d4rl  # pins the CPU kernels (or not, as the environment says)
import torch
from collectors.sac import SACAgent, SACConfig, SACPolicy
from collectors.state_recipe import simulate_episode
from lqv_d4rl.physics import StateSimulator
torch.set_num_threads(1)
policy = SACPolicy.of(SACAgent(SACConfig.cpu(), 24, 6, seed=0))
episode = simulate_episode(StateSimulator("walker_walk"), policy, 7, explore=True, noise_seed=7)
print(hashlib.sha256(episode.states["physics"].tobytes()).hexdigest())
"""


def episode_hash(**environment):
    """The physics states of one walker_walk episode of an untrained SAC actor (a chaotic system:
    a last-bit difference in an action changes the episode), played in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k not in PINNED}
    done = subprocess.run([sys.executable, "-c", EPISODE], env={**env, **environment},
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(not cpu_has_avx2(), reason="pins only on x86-64 CPUs with AVX2")
def test_a_users_kernel_settings_do_not_change_an_episode_unless_pinning_is_off():
    scalar = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}
    pinned = episode_hash()
    assert episode_hash(**scalar) == pinned  # the user's setting is replaced by the pinned one
    # the control: without the pinning the same kernel settings change the episode
    assert episode_hash(LQV_D4RL_PIN_CPU_KERNELS="0", **scalar) != pinned
