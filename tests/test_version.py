"""Which code made a result: a dirty tree is told apart from another, and git's quirks never fail a training."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT


def _checkout(tmp_path: Path, folder: str = "repo"):
    """A git checkout holding a copy of amcore/version.py (its top: the folder above the package), committed, and
    that copy imported as a module of its own."""
    if shutil.which("git") is None:
        pytest.skip("no git")
    top = tmp_path / folder
    (top / "amcore").mkdir(parents=True)
    shutil.copy(ROOT / "amcore" / "version.py", top / "amcore" / "version.py")
    (top / "notes.txt").write_bytes(b"cafe\n")
    git = ["git", "-C", str(top), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "start"], check=True)

    def load():
        spec = importlib.util.spec_from_file_location("version_copy", top / "amcore" / "version.py")  # a fresh cache
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return top, git, load


def test_a_dirty_tree_is_named_by_its_changes_whatever_their_bytes_or_the_users_diff_tool(tmp_path):
    """Audit 31: two dirty trees of one commit carried one tag. The tag now holds the changes' hash; review: a
    changed file that is not UTF-8 crashed it (and with it every checkpoint), a diff tool of the user's was
    recorded as the patch, a failing one recorded the tree as clean."""
    top, git, load = _checkout(tmp_path)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert load().code_version()["amcore.git_commit"] == commit
    (top / "notes.txt").write_bytes(b"caf\xe9\n")  # Latin-1, not UTF-8
    first = load()
    tag = first.code_version()["amcore.git_commit"]
    assert tag.startswith(commit + "+dirty.") and len(tag) == len(commit) + len("+dirty.") + 12
    assert b"-cafe" in first.uncommitted_changes()  # git's own diff
    (top / "notes.txt").write_bytes(b"other\n")
    assert load().code_version()["amcore.git_commit"] != tag  # another change, another tag
    subprocess.run([*git, "config", "diff.external", "false"], check=True)  # a diff tool that fails
    assert load().code_version()["amcore.git_commit"] != commit  # still dirty
    assert "torch" in load().code_version()["amcore.packages"]


def test_a_checkout_whose_path_is_not_utf8_records_an_unknown_commit_not_a_crash(tmp_path):
    """Review: the top folder's name, read from git as UTF-8, raised past the checkpoint it was for."""
    import os

    _, _, load = _checkout(tmp_path, os.fsdecode(b"caf\xe9"))
    assert load().code_version()["amcore.git_commit"] == "unknown"
