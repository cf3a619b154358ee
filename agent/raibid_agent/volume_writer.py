"""Write a directory the way kubelet updates a ConfigMap volume (its AtomicWriter).

For tests, benchmarks and local runs of the agent with ``--settings-dir``: the agent's
watcher then sees exactly what it sees in a pod.

1. write the payload into a fresh hidden timestamped directory ``..2006_01_02_15_04_05.NNN``;
2. point a new symlink ``..data_tmp`` at it and rename it over ``..data`` (rename is atomic,
   so a reader sees the old version or the new one, never a mix);
3. create the user-visible symlinks ``key -> ..data/key`` if missing;
4. remove the previous timestamped directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path


def kubelet_write(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    data_link = directory / "..data"
    old = os.readlink(data_link) if data_link.is_symlink() else None
    stamp = datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.")
    ts_dir = Path(tempfile.mkdtemp(prefix=stamp, dir=directory))
    os.chmod(ts_dir, 0o755)  # mkdtemp makes it 0700; kubelet's are readable by the pod's user
    for name, text in files.items():
        (ts_dir / name).write_text(text, encoding="utf-8")
    tmp_link = directory / "..data_tmp"
    if tmp_link.is_symlink():
        tmp_link.unlink()
    os.symlink(ts_dir.name, tmp_link)
    os.rename(tmp_link, data_link)
    for name in files:
        visible = directory / name
        if not visible.is_symlink():
            os.symlink(f"..data/{name}", visible)
    if old:
        shutil.rmtree(directory / old, ignore_errors=True)
