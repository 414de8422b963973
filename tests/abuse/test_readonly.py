"""Read-only data files are refused at start, loudly (issue 11, item 9).

The tests run as root here, and root writes through any file mode. So the server runs as
``nobody`` (``setpriv --reuid=nobody``): file modes bind it as they would bind a real service
account. The files are made read-only with ``chmod`` between two runs.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from abuse_harness import Server, as_user, clean_env, events_for, site_config

NOBODY = "nobody"


def _nobody_can_run_trimtab() -> str:
    """'' when `nobody` can start this interpreter with trimtab, else the reason."""
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    result = subprocess.run(
        [*as_user(NOBODY), sys.executable, "-c", "import trimtab.cli"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return "" if result.returncode == 0 else result.stderr[-500:]


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory `nobody` owns (pytest's tmp_path is closed to other users)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to the nobody user")
    problem = _nobody_can_run_trimtab()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot run trimtab as nobody: {problem}")
        pytest.skip(f"cannot run trimtab as nobody: {problem}")
    root = Path(tempfile.mkdtemp(prefix="trimtab-ro-"))
    os.chmod(root, 0o755)
    user = pwd.getpwnam(NOBODY)
    os.chown(root, user.pw_uid, user.pw_gid)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _chown_tree(root: Path) -> None:
    user = pwd.getpwnam(NOBODY)
    for path in [root, *root.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid)


def _serve_once(config: Path, data: Path) -> subprocess.CompletedProcess[str]:
    command = Server(config, data, run_as=NOBODY).command()
    return subprocess.run(command, env=clean_env(), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", ["events.sqlite", "state.sqlite", "decisions.sqlite"])
def test_a_read_only_data_file_stops_the_server_at_start_naming_it(nobody_dir, name):
    config = site_config(nobody_dir)
    data = nobody_dir / "data"
    _chown_tree(nobody_dir)
    server = Server(config, data, run_as=NOBODY).start()  # creates the files, as nobody
    try:
        assert server.post_events(events_for("ro", 3))[0] == 200
    finally:
        server.stop()
    os.chmod(data / name, 0o444)
    result = _serve_once(config, data)
    message = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stderr[-2000:]
    assert "cannot serve" in message and name in message and "not writable" in message, message


def test_a_read_only_data_directory_stops_the_server_at_start(nobody_dir):
    config = site_config(nobody_dir)
    data = nobody_dir / "data"
    data.mkdir()
    _chown_tree(nobody_dir)
    os.chmod(data, 0o555)
    result = _serve_once(config, data)
    message = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stderr[-2000:]
    assert "cannot serve" in message and "events.sqlite" in message, message


def test_root_would_not_have_noticed(tmp_path):
    """Why the tests above switch user: root writes to a 0444 file as if it were not."""
    if os.geteuid() != 0:
        pytest.skip("only meaningful as root")
    path = tmp_path / "f"
    path.write_text("x")
    os.chmod(path, 0o444)
    with open(path, "a") as f:  # no PermissionError for root
        f.write("y")
    assert path.read_text() == "xy"
