"""Build-once artifact cache: a directory is used only if its manifest verifies, else rebuilt.

    from tasks.cache import cached_build, cache_root
    path = cached_build(cache_root() / "tiny-clip" / "v1-seed0", build_fn)   # build_fn(tmp_dir) writes files

Every file of a finished build is listed in MANIFEST.json with its size and SHA-256. A directory
without a manifest (a build that died half-way) or with any file missing, resized or altered is
treated as corrupt: it is moved aside and rebuilt, never silently used. Builds are assembled in a
temporary sibling directory and renamed into place, so readers never see a partial build.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

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


def cached_build(directory: Path, build: Callable[[Path], dict | None], *, log: Callable[[str], None] = print) -> Path:
    """Return `directory` holding a verified build; run `build(tmp_dir)` (which may return info
    for the manifest) when it is missing or corrupt."""
    directory = Path(directory)
    if directory.exists():
        problem = verify(directory)
        if problem is None:
            return directory
        log(f"cache {directory} is corrupt ({problem}); rebuilding")
        shutil.rmtree(directory, ignore_errors=True)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.build-"))
    try:
        t0 = time.perf_counter()
        info = build(tmp) or {}
        info.setdefault("build_s", round(time.perf_counter() - t0, 2))
        write_manifest(tmp, info)
        try:
            os.rename(tmp, directory)
        except OSError:            # another process finished the same build first
            if verify(directory) is not None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def manifest_info(directory: Path) -> dict:
    return json.loads((Path(directory) / MANIFEST).read_text()).get("info", {})
