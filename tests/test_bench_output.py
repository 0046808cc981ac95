"""Where `raftstore bench` puts its results, and what it does without a plotting stack (unit:
no benchmark runs here)."""

from __future__ import annotations

import os
import sys

import bench
from bench import report as render
from bench.sql_bench import RESULTS_DIR_DEFAULT, results_dir


def test_results_go_under_the_current_directory_never_inside_the_package(tmp_path):
    where = results_dir(None, "20261202T000000Z", str(tmp_path))
    assert where == os.path.join(str(tmp_path), RESULTS_DIR_DEFAULT, "sql-20261202T000000Z")
    package = os.path.dirname(os.path.abspath(bench.__file__))
    assert not os.path.abspath(where).startswith(package + os.sep)


def test_out_is_taken_as_given_relative_to_the_current_directory(tmp_path):
    assert results_dir("runs/a", "stamp", str(tmp_path)) == os.path.join(str(tmp_path), "runs", "a")
    absolute = str(tmp_path / "elsewhere")
    assert results_dir(absolute, "stamp", "/nowhere") == absolute


def test_without_matplotlib_the_plot_is_skipped_with_a_one_line_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # as if not installed
    path = tmp_path / "cdf.png"
    hint = render.write_cdf_png_if_possible({"raftstore": {"cells": []}}, {}, str(path))
    assert hint == render.PLOT_HINT and "\n" not in hint and "matplotlib" in hint
    assert not path.exists()


def test_with_matplotlib_the_plot_is_written(tmp_path):
    path = tmp_path / "cdf.png"
    assert render.write_cdf_png_if_possible({"raftstore": {"cells": []}}, {}, str(path)) is None
    assert path.stat().st_size > 0
