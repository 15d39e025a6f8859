"""tiny-clip: the quality bars of issue 3, cache reuse and corruption, determinism, the CLI end to end.

The full suite is built once per cache (session fixture `tiny_clip`, ~2.5 min on 2 cores, then
reused: other tests' `SUITES.build("tiny-clip", names=[...])` hit the same cache). Determinism and
corruption use a small variant (tiny build sizes, a few seconds) in temporary cache dirs.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import bench.tasks.tiny_clip as tc
from bench.tasks import quality
from bench.core.evaluator import Evaluator, references
from bench.core.indicators import nondominated_mask
from bench.core.merge import params_hash
from bench.core.registry import SUITES, BenchError
from bench.tasks.cache import MANIFEST, verify

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(train_size=60, val_size=7, test_size=14, pretrain_steps=4, finetune_steps=3)
ACC_TOL = 2 / 500   # two test images: evaluations in another batch layout may flip an argmax tie


@pytest.fixture(scope="session")
def tiny_clip():
    """The full seven-task suite (built on first use, then loaded from the cache)."""
    return SUITES.build("tiny-clip")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Evaluate single-threaded: with anything else running on the 2 cores, two OpenMP threads made a
    tiny-clip evaluation 5× slower (1.3 s instead of 0.25 s for 1000 images)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_build(root: Path, **kw):
    """The small variant in cache root `root`, built in this process unless told otherwise."""
    return SUITES.build("tiny-clip", cache_dir=str(root), **{**SMALL, "build_workers": 1, **kw})


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small build (seed 0) in its own cache root."""
    root = tmp_path_factory.mktemp("tiny-clip-small")
    return root, small_build(root)


def weights_hash(suite) -> str:
    return params_hash({**{f"theta0/{k}": v for k, v in suite.theta0().items()},
                        **{f"tau/{k}": v for k, v in suite.task_vectors().items()},
                        **{f"head/{k}": v for k, v in suite.heads.state_dict().items()}})


# ---- schema and validation ------------------------------------------------------------------
def test_unknown_or_repeated_task_names_are_one_line_errors():
    with pytest.raises(BenchError, match=r"unknown tiny-clip task 'digit' \(did you mean 'digits'\?\); "
                                         r"valid choices: digits, letters, shapes, stripes, texfreq, colour, dots"):
        SUITES.build("tiny-clip", names=["digit"])
    with pytest.raises(BenchError, match="twice"):
        SUITES.build("tiny-clip", names=["dots", "dots"])


# ---- the quality bars -----------------------------------------------------------------------
def test_quality_bars(tiny_clip):
    """Re-measure θ0 and every θ_i through a fresh Evaluator on the loaded suite: the numbers equal what
    the build stored, and they clear the bars (fine-tuned ≥ 0.90, θ0 ≥ 0.10 lower, every pair's shared-λ
    line's best point ≥ 0.05 below both fine-tuned accuracies)."""
    bars = tiny_clip.build_info["bars"]
    refs = references(Evaluator(tiny_clip, "cpu", batch_size=tc.EVAL_BATCH))
    for t in tiny_clip.tasks:
        pre, ft = refs["pretrained"][t]["accuracy"], refs["finetuned"][t]["accuracy"]
        assert pre == pytest.approx(bars["pretrained"][t], abs=1e-12)
        assert ft == pytest.approx(bars["finetuned"][t], abs=1e-12)
        assert ft >= 0.90, f"{t}: fine-tuned accuracy {ft:.3f} < 0.90"
        assert ft - pre >= 0.10, f"{t}: θ0 {pre:.3f} is not 0.10 below fine-tuned {ft:.3f}"
    assert len(bars["pairs"]) == 21
    for pair, p in bars["pairs"].items():
        a, b = pair.split("+")
        line = np.array(p["line"])
        assert line.shape == (11, 2)
        best = line[np.argmax(line.mean(1))]
        gaps = [bars["finetuned"][a] - best[0], bars["finetuned"][b] - best[1]]
        assert min(gaps) >= 0.05, f"{pair}: TA line best point {best} is within 0.05 of fine-tuned ({gaps})"
    assert bars["finetuned_ok"] and bars["gap_ok"] and bars["line_ok"]


def grid_pairs(bars: dict) -> list[tuple[str, str]]:
    """The grid bar (121 evaluations a pair) is checked on one pair: the one whose shared line comes
    closest to the fine-tuned models, i.e. the least conflicting, where trade-offs are scarcest."""
    least = min(bars["pairs"], key=lambda k: min(bars["pairs"][k]["gap"]))
    return [tuple(least.split("+"))]


def test_pair_grid_has_trade_offs_and_its_diagonal_is_the_build_line(tiny_clip):
    """On a two-task subset (loaded from the same cache) the 11×11 per-task grid has ≥ 3 non-dominated
    points; its diagonal is the shared-λ line the build measured on the seven-task suite (another
    stacking of the task vectors), its corners θ0 and the fine-tuned models."""
    bars = tiny_clip.build_info["bars"]
    for a, b in grid_pairs(bars):
        sub = SUITES.build("tiny-clip", names=[a, b])
        X, acc = quality.pair_grid(sub, Evaluator(sub, "cpu", batch_size=tc.EVAL_BATCH), a, b)
        assert X.shape == acc.shape == (121, 2)
        nd = nondominated_mask(1.0 - acc)
        assert nd.sum() >= quality.BAR_GRID_ND, f"{a}+{b}: only {nd.sum()} non-dominated grid points"
        diag = acc[np.isclose(X[:, 0], X[:, 1])]
        np.testing.assert_allclose(diag, bars["pairs"][f"{a}+{b}"]["line"], atol=ACC_TOL)
        corner = {tuple(x): y for x, y in zip(map(tuple, X), acc)}
        assert corner[(1.0, 0.0)][0] == pytest.approx(bars["finetuned"][a], abs=ACC_TOL)
        assert corner[(0.0, 1.0)][1] == pytest.approx(bars["finetuned"][b], abs=ACC_TOL)
        assert corner[(0.0, 0.0)] == pytest.approx([bars["pretrained"][a], bars["pretrained"][b]], abs=ACC_TOL)
        print(f"{a}+{b}: {nd.sum()} non-dominated of 121 grid points")


# ---- structure ------------------------------------------------------------------------------
def test_suite_structure(tiny_clip):
    from transformers import CLIPVisionModel

    assert isinstance(tiny_clip.backbone, CLIPVisionModel)
    theta0, tv = tiny_clip.theta0(), tiny_clip.task_vectors()
    assert set(theta0) == {n for n, _ in tiny_clip.backbone.named_parameters()}
    assert "encoder.layers.3.mlp.fc1.weight" in theta0
    assert sum(v.numel() for v in theta0.values()) == sum(p.numel() for p in tiny_clip.backbone.parameters())
    assert all(tv[k].shape == (7, *v.shape) for k, v in theta0.items())
    for t in tiny_clip.tasks:
        d = tiny_clip.eval_data(t, "test")
        assert d["pixel_values"].dtype == torch.uint8 and d["pixel_values"].shape[1:] == (3, 32, 32)
        assert d["labels"].dtype == torch.int64
        assert not tiny_clip.heads[t].weight.requires_grad
        assert tiny_clip.heads[t].out_features == len(tiny_clip.classes[t])
    batch = tiny_clip.prepare(tiny_clip.eval_data("digits", "val"), torch.device("cpu"))
    x = batch["pixel_values"]
    torch.testing.assert_close(x.mean(dim=(1, 2, 3)), torch.zeros(len(x)), atol=1e-5, rtol=0)   # per-image standardised
    # a subset selects from the one build: same θ0, its task vectors are the matching rows
    sub = SUITES.build("tiny-clip", names=["dots", "digits"])
    assert sub.cache_path == tiny_clip.cache_path and sub.tasks == ["dots", "digits"]
    k = "encoder.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(sub.task_vectors()[k], tv[k][[6, 0]], rtol=0, atol=0)
    assert sub.key != tiny_clip.key


# ---- cache ----------------------------------------------------------------------------------
def test_second_construction_loads_from_cache_in_seconds(tiny_clip, monkeypatch):
    def no_rebuild(*a, **k):
        raise AssertionError("the cached build was not reused")

    monkeypatch.setattr(tc.TinyClip, "_build", no_rebuild)
    t = time.perf_counter()
    again = SUITES.build("tiny-clip")
    dt = time.perf_counter() - t
    assert dt < 5.0, f"loading from cache took {dt:.1f}s"
    assert again.cache_path == tiny_clip.cache_path
    assert weights_hash(again) == weights_hash(tiny_clip)
    print(f"tiny-clip loads from cache in {dt:.2f}s")


@pytest.mark.parametrize("damage", ["truncate", "alter", "no-manifest"])
def test_corrupted_cache_is_detected_and_rebuilt(small, tmp_path, damage, capsys):
    root, ref = small
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    build = copy / "tiny-clip" / ref.cache_path.name
    if damage == "no-manifest":       # a build that died before it finished
        (build / MANIFEST).unlink()
    else:
        target = build / ("finetuned/dots/model.safetensors" if damage == "truncate" else "data/digits.safetensors")
        blob = bytearray(target.read_bytes())
        if damage == "truncate":
            blob = blob[: len(blob) // 2]
        else:
            blob[-100] ^= 0xFF        # one byte inside the image data, same size
        target.write_bytes(bytes(blob))
    assert verify(build) is not None
    rebuilt = small_build(copy)
    assert "is corrupt" in capsys.readouterr().out
    assert rebuilt.build_info["build_workers"] == 1
    assert verify(rebuilt.cache_path) is None
    assert weights_hash(rebuilt) == weights_hash(ref)
    assert torch.equal(rebuilt.eval_data("digits", "train")["pixel_values"], ref.eval_data("digits", "train")["pixel_values"])


# ---- determinism ----------------------------------------------------------------------------
def test_same_seed_same_weights_other_seed_other_weights(small, tmp_path):
    root, ref = small
    again = small_build(tmp_path / "again", build_workers=2)      # two pool processes share the jobs
    assert again.cache_path != ref.cache_path
    assert weights_hash(again) == weights_hash(ref)
    assert params_hash(again.theta0()) == params_hash(ref.theta0())
    other = small_build(tmp_path / "other", seed=1)
    assert params_hash(other.theta0()) != params_hash(ref.theta0())
    assert params_hash(other.task_vectors()) != params_hash(ref.task_vectors())
    assert not torch.equal(other.eval_data("shapes", "test")["pixel_values"], ref.eval_data("shapes", "test")["pixel_values"])


def test_build_sizes_are_respected_and_recorded(small):
    _, ref = small
    assert len(ref.eval_data("dots", "train")["labels"]) == SMALL["train_size"]
    assert len(ref.eval_data("dots", "test")["labels"]) == SMALL["test_size"]
    info = ref.build_info
    assert {"data_s", "pretrain_s", "finetune_and_lines_s", "bars_s", "total_s"} <= set(info["timings"])
    assert info["sizes"] == SMALL and info["seed"] == 0 and info["build_workers"] == 1
    assert ref.config() == {"names": list(tc.TASK_NAMES), "seed": 0, **SMALL}


# ---- end to end through the CLI ---------------------------------------------------------------
def hv_2d(err: np.ndarray, ref: float = 1.0) -> float:
    """Hypervolume of 2-D minimisation points by a sweep (independent of pymoo)."""
    pts = sorted(map(tuple, err[(err < ref).all(axis=1)]))
    hv, best_y = 0.0, ref
    for x, y in pts:
        if y < best_y:
            hv += (ref - x) * (best_y - y)
            best_y = y
    return hv


def test_cli_ta_grid_writes_a_record_with_hv_and_references(tiny_clip, out):
    a, b = "digits", "dots"
    r = subprocess.run([sys.executable, "-m", "bench", "run", "method=ta_grid", "tasks=tiny-clip",
                        f"tasks.names=[{a},{b}]", f"out={out}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads(Path(r.stdout.strip().splitlines()[-1]).read_text())
    assert rec["suite"] == "tiny-clip" and rec["tasks"] == [a, b] and len(rec["points"]) == 11
    bars = tiny_clip.build_info["bars"]
    for t in (a, b):
        assert rec["references"]["finetuned"][t]["accuracy"] == pytest.approx(bars["finetuned"][t], abs=ACC_TOL)
        assert rec["references"]["pretrained"][t]["accuracy"] == pytest.approx(bars["pretrained"][t], abs=ACC_TOL)
    acc = np.array([[p["metrics"][t]["accuracy"] for t in (a, b)] for p in rec["points"]])
    np.testing.assert_allclose(acc, bars["pairs"][f"{a}+{b}"]["line"], atol=ACC_TOL)
    assert rec["indicators"]["hv"] == pytest.approx(hv_2d(1.0 - acc), abs=1e-12)
    assert 0.0 < rec["indicators"]["hv"] < 1.0
