"""A run's directory, from the moment it starts: ownership, resume, evaluation journal, checkpoints.

    <out>/<suite>/<method>/<run-id>/run.json             the resolved config (written when the run starts)
                                    journal.jsonl        one line per evaluation paid for, as it completes
                                    checkpoints/<n>.pt   a method's training state, replaced atomically
                                    record.json …        when the run has finished (bench/core/record.py)

    >>> import tempfile, pathlib
    >>> j = Journal(pathlib.Path(tempfile.mkdtemp()) / "journal.jsonl")
    >>> j.append({"key": ("ta", (0.5, 0.5)), "split": "test"})
    >>> j.entries()[0]["key"]                       # tuples come back as tuples
    ('ta', (0.5, 0.5))

A run claims its directory before any work (`claim`): a second run with the same run_id fails at
once, and a lock is held while it works (the kernel drops it if the process is killed). A journal
line is written, flushed and fsynced before the evaluation's result is used, so a kill loses at
most the evaluation in flight; a torn last line is ignored on read. Checkpoints are written to a
temporary file and renamed over the last one. A run that stops without a record keeps its
directory when it holds paid work (journal or checkpoints) and was not stopped by a user error:
`python -m bench run ... resume=true` (or `resume=<run-id>`) continues it, if its config is the
same; `bench ls runs` lists unfinished runs and how far they got.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import torch

from bench.core.record import atomic_write_bytes, atomic_write_text
from bench.core.registry import BenchError

LOCK = ".lock"
RUN_FILE, JOURNAL = "run.json", "journal.jsonl"
NOT_COMPARED = ("run_id", "resume", "out", "checkpoint_every")    # may differ between attempts


def run_directory(out: str | os.PathLike, suite: str, method: str, run_id: str) -> Path:
    return Path(out) / suite / method / run_id


def _locked(directory: Path) -> bool:
    """Another live process holds the run's lock."""
    try:
        with open(directory / LOCK, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(f, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True


def _compared(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in NOT_COMPARED}


def differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs."""
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += differences(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k}")
    return out


def unfinished(out: str | os.PathLike, suite: str = "*", method: str = "*") -> list[Path]:
    """Run directories under `out` without a record, not being worked on, newest first."""
    dirs = [p.parent for p in Path(out).glob(f"{suite}/{method}/*/{RUN_FILE}")
            if not (p.parent / "record.json").exists() and not _locked(p.parent)]
    return sorted(dirs, key=lambda d: (d / RUN_FILE).stat().st_mtime, reverse=True)


def find_resumable(out, suite: str, method: str, config: dict, resume: str) -> Path:
    """The run directory `resume` names (`true`: the newest unfinished run of this config)."""
    if resume != "true":
        directory = run_directory(out, suite, method, resume)
        if (directory / "record.json").exists():
            raise BenchError(f"resume={resume}: run {str(directory)!r} has finished; nothing to resume")
        if not (directory / RUN_FILE).exists():
            have = ", ".join(d.name for d in unfinished(out, suite, method)) or "none"
            raise BenchError(f"resume={resume}: no unfinished run {str(directory)!r}; unfinished runs of {method} "
                             f"on {suite}: {have}")
        if _locked(directory):
            raise BenchError(f"resume={resume}: run {str(directory)!r} is being worked on by another process")
        saved = json.loads((directory / RUN_FILE).read_text())["config"]
        diff = differences(_compared(saved), _compared(config))
        if diff:
            raise BenchError(f"resume={resume}: the config differs from the unfinished run's in {', '.join(diff)}; "
                             f"resume with the same overrides, or start a new run")
        return directory
    for directory in unfinished(out, suite, method):
        saved = json.loads((directory / RUN_FILE).read_text())["config"]
        if not differences(_compared(saved), _compared(config)):
            return directory
    raise BenchError(f"resume=true: no unfinished run of {method} on {suite} with this config under out={str(out)!r}; "
                     f"`python -m bench ls name=runs out={out}` lists unfinished runs")


@contextlib.contextmanager
def claim(directory: Path, config: dict, resume: bool = False) -> Iterator[Path]:
    """Own `directory` while the run works (see the module docstring). A new run makes it (and
    writes run.json); a resumed one takes over an unfinished one."""
    created = [p for p in (directory, *directory.parents) if not p.exists()]
    if not resume:
        try:
            directory.mkdir(parents=True)
        except FileExistsError:
            state = "holds a finished run" if (directory / "record.json").exists() else \
                "is in use by another run, or was left by an interrupted one (resume it with resume=true)"
            raise BenchError(f"run directory {str(directory)!r} {state}; choose another run_id") from None
    lock = open(directory / LOCK, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise BenchError(f"run directory {str(directory)!r} is being worked on by another process") from None
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    if not resume:
        atomic_write_text(directory / RUN_FILE, json.dumps({"config": config}, indent=1, default=str))
    keep = False
    try:
        yield directory
    except BenchError:
        raise                                      # a mistake: resuming would repeat it
    except BaseException as e:                     # an interruption or a crash: keep what was paid for
        keep = resumable(directory)
        if keep:
            e.resume_hint = f"resume with the same command and resume={directory.name}"
        raise
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
        (directory / LOCK).unlink(missing_ok=True)
        if not (directory / "record.json").exists() and not keep and not resume:
            shutil.rmtree(directory, ignore_errors=True)
            for p in created[1:]:
                with contextlib.suppress(OSError):
                    p.rmdir()                      # only if empty
        elif (directory / "record.json").exists():
            for name in (JOURNAL, RUN_FILE):
                (directory / name).unlink(missing_ok=True)
            shutil.rmtree(directory / "checkpoints", ignore_errors=True)


def resumable(directory: Path) -> bool:
    return bool(Journal(directory / JOURNAL).entries()) or bool(Checkpoints(directory).progress())


def encode(obj: Any) -> Any:
    """JSON form of an evaluation key: tuples as {"t": [...]}, numpy scalars as numbers."""
    if isinstance(obj, tuple):
        return {"t": [encode(v) for v in obj]}
    if isinstance(obj, list):
        return [encode(v) for v in obj]
    if isinstance(obj, dict):
        return {k: encode(v) for k, v in obj.items()}
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        return obj.item()
    return obj


def decode(obj: Any) -> Any:
    if isinstance(obj, dict) and set(obj) == {"t"}:
        return tuple(decode(v) for v in obj["t"])
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    if isinstance(obj, dict):
        return {k: decode(v) for k, v in obj.items()}
    return obj


class Journal:
    """Append-only JSON lines, each durable before `append` returns."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def entries(self) -> list[dict]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(decode(json.loads(line)))
            except json.JSONDecodeError:
                break                                  # a torn last line: the kill came mid-write
        return out

    def append(self, entry: dict) -> None:
        line = json.dumps(encode(entry), separators=(",", ":")) + "\n"
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


class Checkpoints:
    """A method's training state, saved every `every` steps (and when the run is stopped) and
    loaded when the run resumes. `Checkpoints(None)` keeps nothing (a run without a directory)."""

    def __init__(self, directory: Path | None, every: int = 50):
        self.directory = None if directory is None else Path(directory) / "checkpoints"
        self.every = int(every)

    def due(self, step: int) -> bool:
        return self.directory is not None and (step + 1) % self.every == 0

    def save(self, name: str, state: dict) -> None:
        if self.directory is None:
            return
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.directory / f"{name}.pt", buf.getvalue())

    def load(self, name: str) -> dict | None:
        if self.directory is None or not (self.directory / f"{name}.pt").is_file():
            return None
        return torch.load(self.directory / f"{name}.pt", map_location="cpu", weights_only=True)

    def progress(self) -> list[str]:
        return [] if self.directory is None or not self.directory.is_dir() else \
            sorted(p.stem for p in self.directory.glob("*.pt"))


