"""A real full disk and a real read-only file system under a task half way through.

The task directory lives on a small tmpfs of its own. The run is paused by a session limit half way, then
the disk is filled to the last byte (or remounted read-only) and the task is run again: it must stop with
a message that names the problem and the fix, leave every task file byte for byte as it was and no temp
file behind; once space is freed (or the mount is writable again) the same command finishes the task.
Needs permission to mount a tmpfs (root in a container usually has it); skipped otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpt_batch_api.errors import TaskFileError
from gpt_batch_api.simulator import Simulator, SimulatorConfig

from ..support.helpers import FAST_BATCHES, assert_complete
from ..support.numbers_task import NumbersTask

NUM = 60
PATHS = {
    "batch": {"min_batch_requests": 1, "max_batch_requests": 10, "remote_update_interval": 0.1},
    "direct": {"force_direct": True, "max_direct_requests": 10},
}


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture()
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)):
        pytest.skip("cannot mount a tmpfs here (needs CAP_SYS_ADMIN)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def make_task(task_dir: Path, base_url: str, **options) -> NumbersTask:
    base = {"wandb": False, "progress": False, "client_base_url": base_url, "openai_api_key": "sk-test"}
    return NumbersTask(str(task_dir), NUM, **{**base, **options})


def snapshot(task_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(task_dir.iterdir()) if p.is_file()}


def fill(folder: Path) -> Path:
    """Fill the file system holding ``folder`` until a write fails with ENOSPC."""
    filler = folder.parent / f"filler-{uuid.uuid4().hex}"
    with open(filler, "wb", buffering=0) as file:
        chunk = b"\0" * 65536
        with contextlib.suppress(OSError):
            while True:
                file.write(chunk)
        for size in (4096, 512, 1):  # the last blocks
            with contextlib.suppress(OSError):
                while True:
                    file.write(b"\0" * size)
    with pytest.raises(OSError) as info:  # the disk really is full now
        with open(folder.parent / "probe", "wb") as probe:
            probe.write(b"x" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    assert info.value.errno == errno.ENOSPC
    (folder.parent / "probe").unlink(missing_ok=True)
    return filler


def half_done(task_dir: Path, base_url: str, options: dict) -> None:
    """Run until a session limit pauses the task with part of the samples answered."""
    assert make_task(task_dir, base_url, max_session_requests=NUM // 2, **options).run() is False
    assert (task_dir / "numbers_output.jsonl").exists()


@pytest.mark.parametrize("path", sorted(PATHS))
def test_full_disk_stops_cleanly_and_damages_nothing(small_fs: Path, path: str) -> None:
    task_dir = small_fs / "task"
    with Simulator(SimulatorConfig(**FAST_BATCHES)) as sim:
        half_done(task_dir, sim.base_url, PATHS[path])
        before = snapshot(task_dir)
        filler = fill(task_dir)
        with pytest.raises(TaskFileError) as info:
            make_task(task_dir, sim.base_url, **PATHS[path]).run()
        message = str(info.value)
        assert "disk is full" in message and "rerun" in message, message
        assert snapshot(task_dir) == before, "a task file changed although the disk was full"
        filler.unlink()
        assert make_task(task_dir, sim.base_url, **PATHS[path]).run() is True
    assert_complete(task_dir, NUM)
    assert not [p.name for p in task_dir.iterdir() if ".tmp-" in p.name]


def test_read_only_file_system_stops_cleanly_and_damages_nothing(small_fs: Path) -> None:
    task_dir = small_fs / "task"
    with Simulator(SimulatorConfig(**FAST_BATCHES)) as sim:
        half_done(task_dir, sim.base_url, PATHS["batch"])
        before = snapshot(task_dir)
        assert _mount("-o", "remount,ro", str(small_fs))
        try:
            with pytest.raises(TaskFileError) as info:
                make_task(task_dir, sim.base_url, **PATHS["batch"]).run()
        finally:
            assert _mount("-o", "remount,rw", str(small_fs))
        message = str(info.value)
        assert "read-only" in message and str(task_dir) in message, message
        assert snapshot(task_dir) == before
        assert make_task(task_dir, sim.base_url, **PATHS["batch"]).run() is True
    assert_complete(task_dir, NUM)
