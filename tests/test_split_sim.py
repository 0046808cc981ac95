"""Split crash-safety in the deterministic simulator: a crash at any step of a split loses,
doubles or double-serves no key."""

import subprocess
import sys

import pytest

from raftstore.sim.split_world import CRASH_POINTS, SplitSimConfig, run_split_seed
from test_sim import SIM_RUN_TIMEOUT_S


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_crash_at_each_step_of_a_split_loses_and_doubles_nothing(point):
    summary = run_split_seed(SplitSimConfig(seed=1, crash_point=point, crash_hit=1))
    assert summary["crash"].startswith(point), summary      # the crash really happened there
    assert summary["splits"] >= 3 and summary["ranges"] >= 4, summary
    assert summary["acked"] > 200, summary


@pytest.mark.slow
@pytest.mark.timeout(SIM_RUN_TIMEOUT_S + 300)
def test_split_crash_safety_over_105_seeds(sim_env):
    run = subprocess.run([sys.executable, "-m", "raftstore.sim", "--splits", "--seeds", "105"],
                         capture_output=True, text=True, env=sim_env, timeout=SIM_RUN_TIMEOUT_S)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "105 seeds, 0 violations (splits)" in run.stdout


@pytest.mark.slow
@pytest.mark.timeout(SIM_RUN_TIMEOUT_S + 300)
def test_a_node_down_during_splits_and_compactions_catches_up_over_60_seeds(sim_env):
    run = subprocess.run([sys.executable, "-m", "raftstore.sim", "--splits", "--lagging", "--seeds", "60"],
                         capture_output=True, text=True, env=sim_env, timeout=SIM_RUN_TIMEOUT_S)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "60 seeds, 0 violations (splits, lagging)" in run.stdout
