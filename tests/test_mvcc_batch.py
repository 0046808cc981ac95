"""MVCCStore.batch(): one transaction for a tick's applies, each apply still atomic alone."""

import pytest

from raftstore.storage.mvcc import MVCCStore


def test_a_failed_apply_inside_a_batch_changes_nothing_and_the_rest_commits(tmp_path):
    store = MVCCStore(str(tmp_path / "s.sqlite"))
    with store.batch():
        assert store.apply(1, 1, [(b"a", (1, 0), b"x")])
        with pytest.raises((TypeError, ValueError)):
            store.apply(1, 2, [(b"b", (2, 0), b"y"), (b"c", "not a timestamp", b"z")])
        assert store.get_value(b"b", (9, 0)) is None          # the failed apply left nothing
        assert store.apply(1, 2, [(b"d", (3, 0), b"w")])        # and the batch goes on
    store.close()
    again = MVCCStore(str(tmp_path / "s.sqlite"))
    assert again.get_value(b"a", (9, 0)) == b"x" and again.get_value(b"d", (9, 0)) == b"w"
    assert again.get_value(b"b", (9, 0)) is None and again.applied_index(1) == 2


def test_an_export_during_a_batch_sees_the_batch(tmp_path):
    store = MVCCStore(str(tmp_path / "s.sqlite"))
    with store.batch():
        store.apply(1, 1, [(b"k", (1, 0), b"v")])
        with store.export_span(b"", None, 10) as export:
            rows = [r for chunk in export for r in chunk]
    assert rows == [(b"k", 1, 0, b"v")]


def test_nothing_of_an_unfinished_batch_survives_a_crash(tmp_path):
    path = str(tmp_path / "s.sqlite")
    store = MVCCStore(path)
    with pytest.raises(RuntimeError):
        with store.batch():
            store.apply(1, 1, [(b"k", (1, 0), b"v")])
            raise RuntimeError("crash in the middle of a tick")
    assert store.applied_index(1) == 0 and store.get_value(b"k", (9, 0)) is None
