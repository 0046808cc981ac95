import os

import pytest
from hypothesis import HealthCheck, settings

# pysyncobj iterates sets of node-id strings; the simulator's traces depend on that order.
os.environ.setdefault("PYTHONHASHSEED", "0")

# Hypothesis by default fails an example that takes over 200 ms, and a test whose examples are
# slow to generate: speed claims, which a busy machine breaks (a test process stopped for a
# quarter second now and then fails test_wire that way). Tests say what is true, not how fast.
# (Loaded here, before the test modules, so their own @settings inherit it.)
settings.register_profile(
    "raftstore", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("raftstore")


@pytest.fixture
def sim_env():
    """Environment for a simulator subprocess that must replay exactly."""
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = "0"
    return env


def pytest_collection_modifyitems(config, items):
    """Fast tests first, then the slow cluster and simulation runs (stable order otherwise)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is not None)
