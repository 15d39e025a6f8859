"""tiny-gpt2: quality bars, independent re-computations, cache reuse and repair, determinism, the
tokenizer, padding, and a ta_grid run through the CLI.

The default suite is built once into the test cache (tests/conftest.py) and shared; cache and
determinism tests use a small variant built into their own temporary directories.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.core import indicators
from bench.core.evaluator import Evaluator
from bench.core.merge import params_hash
from bench.core.registry import SUITES, BenchError
from bench.tasks import quality, tiny_gpt2
from bench.tasks.cache import MANIFEST, verify
from bench.tasks.text import TASKS, build_tokenizer, encode, generate

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(train_size=48, val_size=8, test_size=16, pretrain_steps=2, finetune_steps=2)
CLI_PAIR = ["sentiment", "negation"]     # the grid bar is checked on this pair through `bench run`
GRID_PAIR = ["topic", "agreement"]        # … and on this one in-process


@pytest.fixture(scope="session")
def suite():
    return SUITES.build("tiny-gpt2")


def suite_hash(s) -> str:
    return params_hash({**s.theta0(), **{f"tv.{k}": v for k, v in s.task_vectors().items()},
                        **{f"head.{k}": v for k, v in s.heads.state_dict().items()}})


def hf_accuracy(path: Path, task: str, body: dict | None, data: dict) -> float:
    """Accuracy of the saved GPT2ForSequenceClassification of `task` through its own forward (its own
    pad-token pooling, full 32-token padding), optionally with another body: independent of the
    Evaluator, functional_call and trim_padding."""
    from transformers import GPT2ForSequenceClassification

    model = GPT2ForSequenceClassification.from_pretrained(path / "finetuned" / task).eval()
    if body is not None:
        model.transformer.load_state_dict(body)
    with torch.inference_mode():
        logits = model(input_ids=data["input_ids"], attention_mask=data["attention_mask"]).logits
    return float((logits.argmax(-1) == data["labels"]).float().mean())


# ---- quality bars -----------------------------------------------------------------------------
def test_quality_bars(suite):
    bars = suite.build_info["bars"]
    print(quality.format_bars("tiny-gpt2", bars, suite.build_info["timings"]))
    for t in suite.tasks:
        assert bars["finetuned"][t] >= quality.BAR_FINETUNED, t
        assert bars["finetuned"][t] - bars["pretrained"][t] >= quality.BAR_GAP, t
    assert len(bars["pairs"]) == 10
    for pair, p in bars["pairs"].items():
        a, b = pair.split("+")
        acc = np.array(p["line"])
        best = int(np.argmax(acc.mean(1)))            # recomputed from the stored line
        assert p["best_lambda"] == pytest.approx(quality.LINE[best])
        assert bars["finetuned"][a] - acc[best, 0] >= quality.BAR_LINE, pair
        assert bars["finetuned"][b] - acc[best, 1] >= quality.BAR_LINE, pair
    assert bars["finetuned_ok"] and bars["gap_ok"] and bars["line_ok"]


def test_bars_match_the_models_own_forward(suite):
    """θ_i, θ0 and one merged point re-scored with GPT2ForSequenceClassification's forward on the
    padded data, with merging done by hand on state dicts: equal to the bars up to rounding flips."""
    bars, tol = suite.build_info["bars"], 2.0 / suite.sizes["test_size"]
    theta0 = {k: v.clone() for k, v in suite.theta0().items()}
    for task in ("negation", "object"):
        data = suite.eval_data(task, "test")
        assert hf_accuracy(suite.cache_path, task, None, data) == pytest.approx(bars["finetuned"][task], abs=tol)
        assert hf_accuracy(suite.cache_path, task, theta0, data) == pytest.approx(bars["pretrained"][task], abs=tol)
    a, b = "topic", "sentiment"
    p = bars["pairs"][f"{a}+{b}"]
    lam = p["best_lambda"]
    fa, fb = suite.finetuned(suite.tasks.index(a)), suite.finetuned(suite.tasks.index(b))
    merged = {k: theta0[k] + lam * ((fa[k] - theta0[k]) + (fb[k] - theta0[k])) for k in theta0}
    best = int(np.argmax(np.array(p["line"]).mean(1)))
    for task, col in ((a, 0), (b, 1)):
        got = hf_accuracy(suite.cache_path, task, merged, suite.eval_data(task, "test"))
        assert got == pytest.approx(p["line"][best][col], abs=tol)


def test_grid_has_nondominated_points(suite):
    ev = Evaluator(suite, "cpu", batch_size=tiny_gpt2.EVAL_BATCH)
    X, acc = quality.pair_grid(suite, ev, *GRID_PAIR)
    assert X.shape == (121, 2) and ev.evaluations == 121
    F = 1.0 - acc
    nd = indicators.nondominated_mask(F)
    brute = [not any((F[j] <= F[i]).all() and (F[j] < F[i]).any() for j in range(len(F))) for i in range(len(F))]
    assert nd.tolist() == brute
    assert nd.sum() >= quality.BAR_GRID_ND


def test_ta_grid_cli_writes_a_record_with_hv_and_references(suite, tmp_path):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "bench", "run", "method=ta_grid", "tasks=tiny-gpt2",
           f"tasks.names=[{','.join(CLI_PAIR)}]", "method.mode=grid", "method.points=4", f"out={out}",
           "device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    path = Path(res.stdout.strip().splitlines()[-1])
    rec = json.loads(path.read_text())
    assert rec["suite"] == "tiny-gpt2" and rec["tasks"] == CLI_PAIR and len(rec["points"]) == 16
    assert 0.0 < rec["indicators"]["hv"] <= 1.0
    bars = suite.build_info["bars"]
    for t in CLI_PAIR:
        assert rec["references"]["finetuned"][t]["accuracy"] == pytest.approx(bars["finetuned"][t])
        assert rec["references"]["pretrained"][t]["accuracy"] == pytest.approx(bars["pretrained"][t])
    # the grid's λ = (1, 1) point is the shared line's λ = 1 point of the bars
    corner = next(p for p in rec["points"] if all(v == 1.0 for v in p["x"].values()))
    line_end = bars["pairs"]["+".join(CLI_PAIR)]["line"][-1]
    assert [corner["metrics"][t]["accuracy"] for t in CLI_PAIR] == pytest.approx(line_end)


# ---- suite mechanics ---------------------------------------------------------------------------
def test_subset_logits_match_the_hf_model_and_padding_is_trimmed(suite):
    from transformers import GPT2ForSequenceClassification

    sub = SUITES.build("tiny-gpt2", names=["object", "agreement"])
    assert sub.tasks == ["object", "agreement"] and sub.cache_path == suite.cache_path
    assert sub.task_vectors()["h.1.mlp.c_fc.weight"].shape == (2, 64, 256)
    assert set(sub.theta0()) == {n for n, _ in sub.backbone.named_parameters()}      # every parameter merged
    g = torch.Generator().manual_seed(0)
    batch = sub.train_batch("agreement", 64, g)
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[1] == int(lengths.max()) < tiny_gpt2.MAX_LENGTH
    assert (batch["attention_mask"][torch.arange(64), lengths - 1] == 1).all()
    # right padding never changes a causal model's last real token: trimmed == fully padded logits
    raw = {k: v[:64] for k, v in sub.eval_data("agreement", "test").items()}
    assert sub.prepare(raw, torch.device("cpu"))["input_ids"].shape[1] < raw["input_ids"].shape[1]
    theta = sub.finetuned(1)
    with torch.inference_mode():
        trimmed = sub.logits(theta, "agreement", sub.prepare(raw, torch.device("cpu")))
        model = GPT2ForSequenceClassification.from_pretrained(suite.cache_path / "finetuned" / "agreement").eval()
        full = model(input_ids=raw["input_ids"], attention_mask=raw["attention_mask"]).logits
    torch.testing.assert_close(trimmed, full, atol=1e-4, rtol=1e-4)


def test_tokenizer_round_trip(suite):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(suite.cache_path / "tokenizer")
    texts, _ = generate("negation", 20, seed=0)
    enc = tok(texts, padding="max_length", max_length=tiny_gpt2.MAX_LENGTH)
    assert [tok.decode(ids, skip_special_tokens=True) for ids in enc["input_ids"]] == texts
    assert all(ids[len(t.split())] == tok.eos_token_id for ids, t in zip(enc["input_ids"], texts))
    assert tok.pad_token_id == 0 and tok.padding_side == "right"
    assert tok("the zebra")["input_ids"][1] == tok.unk_token_id
    fast = encode(tok, texts, tiny_gpt2.MAX_LENGTH)            # the build's batched backend path
    assert fast["input_ids"].tolist() == enc["input_ids"] and fast["attention_mask"].tolist() == enc["attention_mask"]
    import datasets
    stored = datasets.load_from_disk(str(suite.cache_path / "data" / "topic"))["test"]
    ids, mask = torch.tensor(stored["input_ids"]), torch.tensor(stored["attention_mask"])
    order = torch.argsort(mask.sum(dim=1), stable=True)          # evaluation order: by length
    assert torch.equal(ids[order], suite.eval_data("topic", "test")["input_ids"])
    assert encode(tok, stored["text"][:50], tiny_gpt2.MAX_LENGTH)["input_ids"].tolist() == stored["input_ids"][:50]


def test_splits_are_disjoint_and_balanced(suite):
    import datasets

    for task in ("topic", "agreement"):
        dd = datasets.load_from_disk(str(suite.cache_path / "data" / task))
        seen = [set(dd[s]["text"]) for s in ("train", "val", "test")]
        assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
        # drawn balanced, then de-duplicated across splits: every class keeps ≥ 60 % of a uniform share
        counts = np.bincount(dd["test"]["label"], minlength=len(TASKS[task].classes))
        assert counts.min() >= 0.6 * len(dd["test"]) / len(counts)


def test_cache_reuse_loads_without_building(suite, monkeypatch):
    before = (suite.cache_path / MANIFEST).stat().st_mtime_ns
    monkeypatch.setattr(tiny_gpt2.TinyGPT2, "_build", lambda *a, **k: pytest.fail("rebuilt a valid cache"))
    t = time.perf_counter()
    again = SUITES.build("tiny-gpt2")
    load_s = time.perf_counter() - t
    print(f"tiny-gpt2 load from cache: {load_s:.2f}s")
    assert load_s < 10.0
    assert (suite.cache_path / MANIFEST).stat().st_mtime_ns == before
    assert suite_hash(again) == suite_hash(suite)


def test_small_builds_are_deterministic_and_corruption_is_rebuilt(tmp_path, capsys):
    a = SUITES.build("tiny-gpt2", cache_dir=str(tmp_path / "a"), build_workers=1, **SMALL)
    b = SUITES.build("tiny-gpt2", cache_dir=str(tmp_path / "b"), build_workers=2, **SMALL)   # two pool processes
    c = SUITES.build("tiny-gpt2", cache_dir=str(tmp_path / "b"), seed=1, build_workers=1, **SMALL)
    assert a.cache_path.name.startswith("v2-seed0-") and c.cache_path.name.startswith("v2-seed1-")
    h = suite_hash(a)
    assert suite_hash(b) == h
    assert suite_hash(c) != h
    assert torch.equal(a.eval_data("topic", "train")["input_ids"], b.eval_data("topic", "train")["input_ids"])
    # an altered weight file is detected and rebuilt (to the same weights), never used
    f = a.cache_path / "finetuned" / "object" / "model.safetensors"
    blob = bytearray(f.read_bytes())
    blob[-5] ^= 0xFF
    f.write_bytes(bytes(blob))
    assert verify(a.cache_path).startswith("altered file")
    capsys.readouterr()
    rebuilt = SUITES.build("tiny-gpt2", cache_dir=str(tmp_path / "a"), build_workers=1, **SMALL)
    assert "corrupt" in capsys.readouterr().out
    assert verify(rebuilt.cache_path) is None and suite_hash(rebuilt) == h
    # a build that died half-way (no manifest) is rebuilt too
    (rebuilt.cache_path / MANIFEST).unlink()
    assert suite_hash(SUITES.build("tiny-gpt2", cache_dir=str(tmp_path / "a"), build_workers=1, **SMALL)) == h


def test_bad_names_and_sizes_fail_with_the_valid_choices():
    with pytest.raises(BenchError, match="unknown tiny-gpt2 task 'sentimnet'.*did you mean 'sentiment'.*agreement"):
        SUITES.build("tiny-gpt2", names=["topic", "sentimnet"])
    with pytest.raises(BenchError, match="twice"):
        SUITES.build("tiny-gpt2", names=["topic", "topic"])
    with pytest.raises(BenchError, match="empty"):
        SUITES.build("tiny-gpt2", names=[])
    with pytest.raises(BenchError, match="finetune_steps=0"):
        SUITES.build("tiny-gpt2", finetune_steps=0)
    with pytest.raises(BenchError, match="build_workers=0"):
        SUITES.build("tiny-gpt2", build_workers=0)


def test_text_generation_is_deterministic_and_labels_follow_the_slots():
    x1, y1 = generate("agreement", 60, seed=3)
    x2, y2 = generate("agreement", 60, seed=3)
    assert x1 == x2 and (y1 == y2).all() and generate("agreement", 60, seed=4)[0] != x1
    from bench.tasks import text

    number = {w: i for pairs in text.NOUNS.values() for p in pairs for i, w in enumerate(p)}
    verbs = {w: i for vs in (text.VERBS, text.VERBS_POSITIVE, text.VERBS_NEGATIVE) for p in vs for i, w in enumerate(p)}
    for sentence, y in zip(x1, y1):      # independent parse: first noun of the main clause vs its verb
        main = sentence.split(" , it was")[0] if sentence.startswith("the ") else sentence.split(" , ", 1)[1]
        words = main.split()
        subj = next(w for w in words if w in number)
        verb = next(w for w in words if w in verbs)
        assert (number[subj] == verbs[verb]) == bool(y), sentence
    xs, ys = generate("sentiment", 60, seed=3)
    for sentence, y in zip(xs, ys):      # majority of the three sentiment words
        votes = [+1 if w in text.POSITIVE else -1 for w in sentence.split() if w in text.POSITIVE + text.NEGATIVE]
        assert len(votes) == 3 and (sum(votes) > 0) == bool(y), sentence
    tok = build_tokenizer(x1)
    assert tok.convert_ids_to_tokens(list(range(4))) == ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    assert tok.unk_token_id not in tok.convert_tokens_to_ids(text.lexicon())     # every grammar word has an id


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-clip"])
def test_eval_size_subsets_the_offline_suites(name):
    """tasks.eval_size on an offline suite: val/test are the stratified rows of the full splits (kept in
    their stored order: text sorted by length), train is whole, the key and description change."""
    from bench.tasks.base import stratified_subset

    full, sub = SUITES.build(name), SUITES.build(name, eval_size=37, eval_seed=4)
    assert sub.key != full.key and sub.describe().endswith("[eval subset ≤ 37/task]")
    assert SUITES.build(name, eval_size=37, eval_seed=4).key == sub.key != SUITES.build(name, eval_size=37).key
    for t in full.tasks:
        assert torch.equal(sub.eval_data(t, "train")["labels"], full.eval_data(t, "train")["labels"])
        for split in ("val", "test"):
            f, s = full.eval_data(t, split), sub.eval_data(t, split)
            rows = sub.eval_rows(t, split, f["labels"].numpy())
            assert len(rows) == 37 and np.array_equal(rows, np.sort(rows))
            assert all(torch.equal(s[k], f[k][torch.from_numpy(rows)]) for k in f), (t, split)
            counts, whole = np.bincount(s["labels"].numpy()), np.bincount(f["labels"].numpy())
            assert np.all(np.abs(counts - 37 * whole[:len(counts)] / whole.sum()) < 1)      # proportional
    assert len(stratified_subset(np.arange(5), 9, 0)) == 5
