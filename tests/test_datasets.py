"""``amcore datasets fetch``: from the source's own file format, served by a real local HTTP server."""

from __future__ import annotations

import functools
import http.server
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import BIN, ROOT, cli_env

SHARED = ROOT.parent / "shared" / "data" / "eb_nlsb_valtest_pca100.npz"


@pytest.fixture
def source_server(tmp_path):
    """NLSB's ``data/val_rna.npz`` and ``data/test_rna.npz`` as its repository holds them (keys X, ts, v),
    rebuilt from the shared subset, behind ``http://127.0.0.1:<port>``."""
    if not SHARED.exists():
        pytest.skip(f"{SHARED} is absent (shared datasets not mounted)")
    d = np.load(SHARED)
    root = tmp_path / "www"
    (root / "data").mkdir(parents=True)
    for split in ("val", "test"):
        rows = d["split"] == split
        np.savez(root / "data" / f"{split}_rna.npz", X=d["X"][rows], ts=d["t"][rows].astype(float), v=d["v"][rows])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def fetch(url: str, to: Path) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "amcore"), "datasets", "fetch", "eb", "--to", str(to)]
    return subprocess.run(cmd, env=cli_env(AMCORE_DATASETS_URL=url), capture_output=True, text=True, timeout=120)


def test_fetch_converts_the_source_into_the_npz_the_config_reads(tmp_path, source_server):
    _, url = source_server
    result = fetch(url, tmp_path / "data")
    assert result.returncode == 0, result.stderr
    got, want = np.load(tmp_path / "data" / "eb_nlsb_valtest_pca100.npz"), np.load(SHARED)
    np.testing.assert_array_equal(got["X"], want["X"])
    np.testing.assert_array_equal(got["t"], want["t"])
    assert "path: data/eb_nlsb_valtest_pca100.npz" in (ROOT / "config" / "leaveout" / "eb.yaml").read_text()


def test_a_changed_source_is_refused_and_nothing_is_written(tmp_path, source_server):
    root, url = source_server
    with np.load(root / "data" / "test_rna.npz") as npz:
        arrays = dict(npz)
    arrays["X"][7, 3] += 1e-9  # one number, barely: the checksum is on the content
    np.savez(root / "data" / "test_rna.npz", **arrays)
    result = fetch(url, tmp_path / "data")
    assert result.returncode == 2 and "does not match its checksum" in result.stderr
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []
    missing = fetch(url + "/nowhere", tmp_path / "data")
    assert missing.returncode == 2 and "download failed" in missing.stderr and "Traceback" not in missing.stderr
