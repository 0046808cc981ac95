"""The house reads as the data path (issue 10): the rules a move or a shortcut could break.

- pysyncobj's private members (`_SyncObj__...`) are named only under raftstore/raft/;
- the core (raft, storage, kvserver, router, node) imports nothing of sql/, the server or the
  CLI; the store's rooms (raft, storage, kvserver) nothing of the router or of the process's
  edges (node); the router (kvclient) only the store's types, never the store itself;
- only the composition root (raftstore/server/) wires the store to sql/; sql/ knows nothing
  of the Raft layer, the router or the node (its KV is handed to it).
Read from the source with `ast`, nothing is imported. Tests (tests/) may name anything.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("raftstore", "sql", "hlc", "bench")


def _sources() -> list[pathlib.Path]:
    return sorted(p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py"))


def _rel(path: pathlib.Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _imports(path: pathlib.Path) -> set[str]:
    """Every module `path` imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _rel(path)[:-3].replace("/", ".").rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out.update(base + "." + alias.name for alias in node.names)
    return out


def _violations(room: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in _sources():
        if not _rel(path).startswith(room + "/"):
            continue
        for module in sorted(_imports(path)):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                bad.append("%s imports %s" % (_rel(path), module))
    return bad


def private_name_uses(paths: list[pathlib.Path]) -> list[str]:
    return ["%s:%d" % (_rel(p), i) for p in paths if not _rel(p).startswith("raftstore/raft/")
            for i, line in enumerate(p.read_text().splitlines(), 1) if "_SyncObj__" in line]


def test_pysyncobjs_private_names_appear_only_under_raftstore_raft():
    assert private_name_uses(_sources()) == []


def test_the_private_name_check_catches_a_use_outside_raftstore_raft():
    bad = ROOT / "raftstore" / "kvserver" / "_layout_probe.py"
    bad.write_text("x = group._SyncObj__conf\n")
    try:
        assert private_name_uses(_sources()) == ["raftstore/kvserver/_layout_probe.py:1"]
    finally:
        bad.unlink()


@pytest.mark.parametrize("room, forbidden", [
    ("raftstore/raft", ("sql", "raftstore.server", "raftstore.cli", "raftstore.node", "raftstore.kvserver", "raftstore.router")),
    ("raftstore/storage", ("sql", "raftstore.server", "raftstore.cli", "raftstore.node", "raftstore.kvserver",
                           "raftstore.router")),
    ("raftstore/kvserver", ("sql", "raftstore.server", "raftstore.cli", "raftstore.node", "raftstore.router")),
    ("raftstore/router", ("sql", "raftstore.server", "raftstore.cli", "raftstore.node", "raftstore.storage",
                          "raftstore.kvserver.store", "raftstore.kvserver.replica")),
    ("raftstore/node", ("sql", "raftstore.server", "raftstore.cli")),
    ("raftstore/sim", ("sql", "raftstore.server", "raftstore.cli", "raftstore.node")),
    ("hlc", ("raftstore", "sql")),
    ("sql", ("raftstore.server", "raftstore.cli", "raftstore.node", "raftstore.kvserver", "raftstore.storage",
             "raftstore.raft", "raftstore.router")),
])
def test_each_room_imports_only_what_lies_below_it_on_the_data_path(room, forbidden):
    assert _violations(room, forbidden) == []


def test_only_the_server_wires_the_store_to_sql():
    wiring = sorted({_rel(p) for p in _sources() if _rel(p).startswith("raftstore/")
                     and any(m == "sql" or m.startswith("sql.") for m in _imports(p))})
    assert wiring == ["raftstore/server/main.py", "raftstore/server/nodekv.py"]


def test_the_import_check_catches_a_core_module_that_imports_sql():
    bad = ROOT / "raftstore" / "kvserver" / "_layout_probe.py"
    bad.write_text("from sql.gateway import Gateway\n")
    try:
        assert _violations("raftstore/kvserver", ("sql",)) == ["raftstore/kvserver/_layout_probe.py imports sql.gateway",
                                                                "raftstore/kvserver/_layout_probe.py imports sql.gateway.Gateway"]
    finally:
        bad.unlink()
