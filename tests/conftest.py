import os

import pytest

# pysyncobj iterates sets of node-id strings; the simulator's traces depend on that order.
os.environ.setdefault("PYTHONHASHSEED", "0")


@pytest.fixture
def sim_env():
    """Environment for a simulator subprocess that must replay exactly."""
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = "0"
    return env


def pytest_collection_modifyitems(config, items):
    """Fast tests first, then the slow cluster and simulation runs (stable order otherwise)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is not None)
