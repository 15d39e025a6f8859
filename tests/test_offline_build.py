"""The offline suites' shared machinery (tasks/offline.py, tasks/cache.py) with real processes: the
build id rule, the options' documentation, the build pool's workers dying with their parent, stale
temporary build folders removed, and concurrent builders of one cache entry (one builds, one waits).

The cache tests load tasks/cache.py on its own (standard library only), so their subprocesses start
in milliseconds; the suite tests build small variants of tiny-clip / tiny-gpt2 (seconds).
"""
from __future__ import annotations

import inspect
import io
import math
import signal
import subprocess
import sys
import time
import tokenize
from pathlib import Path

import pytest

from bench.core.merge import params_hash
from bench.core.registry import SUITES, BenchError
from bench.tasks.cache import build_lock, cached_build, verify
from bench.tasks.offline import COMMON_OPTIONS, schedule
from bench.tasks.tiny_clip import TinyClip
from bench.tasks.tiny_gpt2 import TinyGPT2

ROOT = Path(__file__).resolve().parent.parent
SUITE_CLASSES = [TinyClip, TinyGPT2]
SMALL = dict(train_size=48, val_size=8, test_size=16, pretrain_steps=2, finetune_steps=2)


def run_python(code: str, **kw) -> subprocess.Popen:
    """`python -c code` in the repository root, its output captured."""
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kw)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


# ---- one schedule, one build id, options documented in the signature ------------------------------
def test_schedule_warms_up_linearly_then_decays_to_zero():
    steps, warm = 100, 10
    assert [schedule(s, steps, 0.1) for s in range(warm)] == pytest.approx([(s + 1) / warm for s in range(warm)])
    assert schedule(warm, steps, 0.1) == 1.0
    assert schedule(warm + 45, steps, 0.1) == pytest.approx(0.5)       # half-way through the cosine
    assert schedule(steps - 1, steps, 0.1) == pytest.approx(0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert schedule(0, 1, 0.05) == 1.0                                 # at least one warm-up step


@pytest.mark.parametrize("cls", SUITE_CLASSES, ids=lambda c: c.name)
def test_build_id_hashes_only_the_sizes_that_differ_from_the_signature(cls):
    defaults = cls.default_sizes()
    assert set(defaults) == {"train_size", "val_size", "test_size", "pretrain_steps", "finetune_steps"}
    sig = inspect.signature(cls.__init__).parameters
    assert all(defaults[k] == sig[k].default for k in defaults)
    assert cls.build_id(0, defaults) == f"v{cls.version}-seed0"
    assert cls.build_id(3, defaults) == f"v{cls.version}-seed3"
    small = cls.build_id(0, {**defaults, "finetune_steps": 3})
    assert small.startswith(f"v{cls.version}-seed0-") and len(small.rsplit("-", 1)[1]) == 10
    assert small != cls.build_id(0, {**defaults, "pretrain_steps": 3})
    # the tag depends on the changed sizes only: one rule for every offline suite
    tags = {c.build_id(0, {**c.default_sizes(), "finetune_steps": 3}).rsplit("-", 1)[1] for c in SUITE_CLASSES}
    assert len(tags) == 1


@pytest.mark.parametrize("cls", SUITE_CLASSES, ids=lambda c: c.name)
def test_every_option_has_a_default_and_a_comment_on_its_own_line(cls):
    """`bench ls <suite>` prints each option's default and trailing comment from the signature."""
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    assert all(p.default is not inspect.Parameter.empty for p in params)
    assert {p.name for p in params} == {*COMMON_OPTIONS, *cls.default_sizes()}
    source = inspect.getsource(cls.__init__)
    comments = {t.start[0]: t.string for t in tokenize.generate_tokens(io.StringIO(source).readline)
                if t.type == tokenize.COMMENT}
    lines = source.splitlines()
    for p in params:
        row = next(i for i, line in enumerate(lines, 1) if line.strip().startswith(f"{p.name}:"))
        assert len(comments.get(row, "").lstrip("# ")) > 10, f"{cls.name}.{p.name}: no trailing comment"


@pytest.mark.parametrize("cls", SUITE_CLASSES, ids=lambda c: c.name)
@pytest.mark.parametrize("bad", [dict(build_workers=0), dict(train_size=0), dict(pretrain_steps=-1)])
def test_sizes_and_workers_below_one_are_one_line_errors(cls, bad, tmp_path):
    (key, value), = bad.items()
    with pytest.raises(BenchError, match=rf"^tasks\.{key}={value} must be ≥ 1$"):
        SUITES.build(cls.name, cache_dir=str(tmp_path), **bad)
    assert not any(tmp_path.iterdir()), "a rejected option must not touch the cache"


# ---- tasks/cache.py with real processes ---------------------------------------------------------
CACHE = f"""
import importlib.util, sys, time
from pathlib import Path
spec = importlib.util.spec_from_file_location("cache", {str(ROOT / "tasks" / "cache.py")!r})
cache = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cache)
"""


def slow_builder(directory: Path, tag: str, go: Path) -> str:
    """A process building `directory` with cache.cached_build: it writes `<tag>.started` beside the
    build, waits for `go` to exist, then writes its tag into the build."""
    return CACHE + f"""
def build(tmp):
    (Path({str(directory.parent)!r}) / "{tag}.started").touch()
    while not Path({str(go)!r}).exists():
        time.sleep(0.02)
    (tmp / "who").write_text("{tag}")
print("path", cache.cached_build(Path({str(directory)!r}), build), flush=True)
"""


def test_two_processes_asking_for_one_build_build_it_once(tmp_path):
    target, go = tmp_path / "suite" / "v1-seed0", tmp_path / "go"
    a = run_python(slow_builder(target, "a", go))
    wait_for(lambda: (target.parent / "a.started").exists(), 30, "the first builder to start")
    b = run_python(slow_builder(target, "b", go))
    time.sleep(0.5)                           # b is now waiting on a's lock
    assert b.poll() is None and not (target.parent / "b.started").exists()
    go.touch()
    out_a, out_b = a.communicate(timeout=30)[0], b.communicate(timeout=30)[0]
    assert a.returncode == b.returncode == 0, out_a + out_b
    assert "waiting for another process building" in out_b
    assert not (target.parent / "b.started").exists(), "the waiting process built again"
    assert (target / "who").read_text() == "a" and verify(target) is None
    assert not list(target.parent.glob(".*.build-*"))


def test_a_killed_builders_folder_is_removed_and_a_live_ones_is_kept(tmp_path, capsys):
    parent, go = tmp_path / "suite", tmp_path / "never"
    dead = run_python(slow_builder(parent / "v1-seed0", "dead", go))
    live = run_python(slow_builder(parent / "v1-seed1", "live", go))
    wait_for(lambda: (parent / "dead.started").exists() and (parent / "live.started").exists(), 30, "both builders")
    dead.kill()
    dead.wait()
    assert len(list(parent.glob(".v1-seed0.build-*"))) == 1            # what SIGKILL leaves behind
    # another build in the same folder: removes the dead build's folder, not the live one's
    cached_build(parent / "v1-seed2", lambda tmp: (tmp / "x").write_text("x") and None)
    assert "left behind by a build that died" in capsys.readouterr().out
    assert not list(parent.glob(".v1-seed0.build-*"))
    assert len(list(parent.glob(".v1-seed1.build-*"))) == 1 and live.poll() is None
    with build_lock(parent / "v1-seed1", wait=False) as free:
        assert not free                                                # the live builder still holds it
    # the dead build's own entry is built afresh on the next request
    path = cached_build(parent / "v1-seed0", lambda tmp: (tmp / "who").write_text("again") and None)
    assert (path / "who").read_text() == "again" and verify(path) is None
    live.kill()
    live.wait()


# ---- the build pool with real processes -----------------------------------------------------------
def children(pid: int) -> list[int]:
    """Live processes whose parent is `pid` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def is_pool_worker(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_die_with_a_killed_build_and_its_folder_is_cleaned(tmp_path, capsys):
    """A tiny-clip build with two pool workers, killed once θ0 is written (workers busy fine-tuning or
    waiting for jobs): the workers exit within seconds, and the next build in that cache removes the
    killed build's temporary folder."""
    sizes = dict(SMALL, finetune_steps=400)     # fine-tuning outlasts the test: the kill lands mid-build
    builder = run_python(f"import bench.tasks\nfrom bench.core.registry import SUITES\n"
                         f"SUITES.build('tiny-clip', cache_dir={str(tmp_path)!r}, build_workers=2, **{sizes!r})")
    parent = tmp_path / "tiny-clip"
    try:
        wait_for(lambda: any(parent.glob(".*.build-*/theta0/config.json")) or builder.poll() is not None,
                 120, "θ0 of the build")
        assert builder.poll() is None, builder.communicate()[0][-2000:]
        wait_for(lambda: sum(map(is_pool_worker, children(builder.pid))) == 2, 60, "two pool workers")
        workers = [p for p in children(builder.pid) if is_pool_worker(p)]
        builder.send_signal(signal.SIGKILL)          # the hard case: the parent runs no cleanup
        builder.wait(timeout=10)
    finally:
        if builder.poll() is None:
            builder.kill()
    t = time.monotonic()
    wait_for(lambda: not any(map(alive, workers)), 5, f"pool workers {workers} to exit")
    print(f"workers exited {time.monotonic() - t:.2f}s after SIGKILL")
    stale = list(parent.glob(".*.build-*"))
    assert len(stale) == 1
    suite = SUITES.build("tiny-clip", cache_dir=str(tmp_path), build_workers=1, **SMALL)   # another entry, same folder
    assert "left behind by a build that died" in capsys.readouterr().out
    assert not stale[0].exists() and not list(parent.glob(".*.build-*"))
    assert verify(suite.cache_path) is None


def test_two_processes_building_one_suite_build_it_once(tmp_path):
    """Two processes asking for the same tiny-gpt2 build at once: both load the same, verified build,
    and it was built (and its quality bars printed) once."""
    code = (f"import bench.tasks\nfrom bench.core.registry import SUITES\nfrom bench.core.merge import params_hash\n"
            f"s = SUITES.build('tiny-gpt2', cache_dir={str(tmp_path)!r}, build_workers=1, **{SMALL!r})\n"
            f"print('hash', params_hash(s.task_vectors()))")
    procs = [run_python(code) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-2000:] for o in outs)
    hashes = {line.split()[1] for o in outs for line in o.splitlines() if line.startswith("hash ")}
    assert len(hashes) == 1
    assert sum(o.count("quality bars (test accuracy)") for o in outs) == 1
    suite = SUITES.build("tiny-gpt2", cache_dir=str(tmp_path), **SMALL)
    assert verify(suite.cache_path) is None and params_hash(suite.task_vectors()) in hashes
