"""Build-once artifact cache: a directory is used only if its manifest verifies, else rebuilt.

    from bench.tasks.cache import cached_build, cache_root
    path = cached_build(cache_root() / "tiny-clip" / "v1-seed0", build_fn)   # build_fn(tmp_dir) writes files

Every file of a finished build is listed in MANIFEST.json with its size and SHA-256. A directory
without a manifest (a build that died half-way) or with any file missing, resized or altered is
treated as corrupt: it is removed and rebuilt, never silently used. Builds are assembled in a
temporary sibling `.<name>.build-*` and renamed into place, so readers never see a partial build.

One builder at a time: a build holds an exclusive `fcntl` lock on the sibling file `.<name>.lock`
from before its temporary folder exists until after the rename. A second process asking for the same
build waits on that lock, then finds the finished directory and uses it. The kernel drops the lock
when its holder dies, however it dies, so a temporary folder whose lock is free was left by a dead
build: such folders are removed on every call, and one that a live builder holds never is.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

MANIFEST = "MANIFEST.json"


def cache_root() -> Path:
    """$PARETOBENCH_CACHE, else the user's cache dir (~/.cache/paretobench)."""
    env = os.environ.get("PARETOBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "paretobench"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(directory: Path, info: dict | None = None) -> None:
    files = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(directory).as_posix()
            files[rel] = {"size": p.stat().st_size, "sha256": _sha256(p)}
    (directory / MANIFEST).write_text(json.dumps({"info": info or {}, "files": files}, indent=1))


def verify(directory: Path) -> str | None:
    """None if the directory is a complete, unaltered build; else why not."""
    m = directory / MANIFEST
    if not m.is_file():
        return "no manifest (incomplete build)"
    try:
        files = json.loads(m.read_text())["files"]
    except (OSError, ValueError, KeyError):
        return "unreadable manifest"
    for rel, meta in files.items():
        p = directory / rel
        if not p.is_file():
            return f"missing file {rel}"
        if p.stat().st_size != meta["size"] or _sha256(p) != meta["sha256"]:
            return f"altered file {rel}"
    return None


@contextlib.contextmanager
def build_lock(directory: Path, *, wait: bool = True, log: Callable[[str], None] | None = None) -> Iterator[bool]:
    """Hold the exclusive build lock of `directory` inside the block. Another process holds it: wait
    for it (saying so through `log`), or with `wait=False` yield False at once, holding nothing.
    The lock file is never deleted: a process that opened it before a deletion would lock a file
    that no later process sees."""
    with open(directory.parent / f".{directory.name}.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            if log is not None:
                log(f"waiting for another process building {directory}")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield True          # closing the file releases the lock


def remove_stale_builds(parent: Path) -> list[Path]:
    """Remove the temporary build folders under `parent` whose builder is gone (their lock is free)."""
    removed = []
    for tmp in sorted(parent.glob(".*.build-*")):
        target = parent / tmp.name[1:].rsplit(".build-", 1)[0]
        with build_lock(target, wait=False) as free:
            if free:
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
    return removed


def cached_build(directory: Path, build: Callable[[Path], dict | None], *, log: Callable[[str], None] = print) -> Path:
    """Return `directory` holding a verified build; run `build(tmp_dir)` (which may return info
    for the manifest) when it is missing or corrupt, or wait for a process already building it."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    for tmp in remove_stale_builds(directory.parent):
        log(f"removed {tmp}, left behind by a build that died")
    if verify(directory) is None:
        return directory
    with build_lock(directory, log=log):
        if directory.exists():
            problem = verify(directory)
            if problem is None:          # built by the process this one waited for
                return directory
            log(f"cache {directory} is corrupt ({problem}); rebuilding")
            shutil.rmtree(directory)
        tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.build-"))
        try:
            t0 = time.perf_counter()
            info = build(tmp) or {}
            info.setdefault("build_s", round(time.perf_counter() - t0, 2))
            write_manifest(tmp, info)
            os.rename(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return directory


def manifest_info(directory: Path) -> dict:
    return json.loads((Path(directory) / MANIFEST).read_text()).get("info", {})
