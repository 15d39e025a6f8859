"""PWE-MoE (methods/pwe_moe) and `bench export`.

Unit tests run on tiny random CLIPVisionModel / GPT2Model suites built here (`FakeSuite`);
the end-to-end tests run the real offline suites (tiny-clip, tiny-gpt2) through the CLI.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, GPT2Config, GPT2Model
from transformers.models.clip.modeling_clip import CLIPMLP, CLIPAttention
from transformers.models.gpt2.modeling_gpt2 import GPT2MLP, GPT2Attention

from bench.cli import main as cli
from bench.core.merge import stack_task_vectors, task_arithmetic
from bench.core.registry import METHODS, BenchError
from bench.methods.pwe_moe import Routers, module_groups, router_param_count, unload
from tests.pwe_moe_oracle import PWEMoEModel, sequential_router
from bench.methods.pwe_moe.trainer import build_plan, router_step, train_routers
from bench.tasks.base import ModelSuite
from bench.tasks.models import backbone_params, clip_vision_features, gpt2_features


# ---- a tiny random suite of either architecture ------------------------------------------------
class FakeSuite(ModelSuite):
    """A random tiny CLIPVisionModel or GPT2Model, random 'fine-tuned' models, random labelled data."""

    version = "0"

    def __init__(self, kind: str = "clip", num_tasks: int = 2, seed: int = 0, n: int = 32):
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.kind, self.name = kind, f"fake-{kind}"
        self.modality = "image" if kind == "clip" else "text"
        self.train_batch_size = 16 if kind == "clip" else 8
        if kind == "clip":
            self.backbone = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                             num_attention_heads=2, image_size=16, patch_size=8))
        else:
            self.backbone = GPT2Model(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=50, n_positions=16,
                                                 bos_token_id=0, eos_token_id=0))
        self.backbone.eval()
        self.tasks = [f"t{i}" for i in range(num_tasks)]
        self._theta0 = backbone_params(self.backbone)
        finetuned = [{k: v + 0.1 * v.std().clamp_min(0.02) * torch.randn(v.shape, generator=g)
                      for k, v in self._theta0.items()} for _ in self.tasks]
        self._task_vectors = stack_task_vectors(self._theta0, finetuned)
        self.heads = nn.ModuleDict({t: nn.Linear(32, 3) for t in self.tasks})
        self._data = {t: {s: self._random_data(n, g) for s in ("train", "val", "test")} for t in self.tasks}

    def _random_data(self, n, g):
        labels = torch.randint(3, (n,), generator=g)
        if self.kind == "clip":
            return {"pixel_values": torch.randn(n, 3, 16, 16, generator=g), "labels": labels}
        return {"input_ids": torch.randint(50, (n, 12), generator=g),
                "attention_mask": torch.ones(n, 12, dtype=torch.long), "labels": labels}

    def features(self, params, batch):
        fn = clip_vision_features if self.kind == "clip" else gpt2_features
        return fn(self.backbone, params, batch)

    def model_inputs(self):
        return {k: v for k, v in self._data[self.tasks[0]]["test"].items() if k != "labels"}


def model_output(model: nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).last_hidden_state


def trained(suite, upscale="mlp", steps=15, scalarizer="ls"):
    plan = build_plan(suite, upscale, 0.3)
    routers = Routers(plan.num_modules, suite.num_tasks, generator=torch.Generator().manual_seed(0))
    train_routers(suite, plan, routers, scalarizer=scalarizer, steps=steps, lr=5e-2, batch_size=8,
                  dirichlet_alpha=1.0, seed=0)
    return plan, routers


# ---- routers and upscaling ---------------------------------------------------------------------
def test_routers_are_the_papers_mlps():
    """The stacked routers equal M independent Linear(T,2T)→ReLU→Linear(2T,T); init as specified."""
    M, T = 200, 3
    routers = Routers(M, T, init_lambda=0.3, generator=torch.Generator().manual_seed(1))
    r = torch.tensor([[0.2, 0.5, 0.3], [1.0, 0.0, 0.0]])
    out = routers(r)                                                       # [B, M, T]
    for m in (0, 57, M - 1):
        seq = sequential_router(routers, m)
        assert isinstance(seq[0], nn.Linear) and seq[0].weight.shape == (2 * T, T)
        assert torch.allclose(out[:, m], seq(r), atol=1e-7)
    assert torch.equal(routers.b1, torch.zeros(M, 2 * T))
    assert torch.equal(routers.b2, torch.full((M, T), 0.3))
    for w in (routers.w1, routers.w2):                                     # N(0, 0.01²): 1200 draws each
        assert abs(float(w.std()) - 0.01) < 0.001 and abs(float(w.mean())) < 0.001
    assert routers.num_trainable() == router_param_count(M, T) == M * (4 * T * T + 3 * T)


@pytest.mark.parametrize("kind", ["clip", "gpt2"])
def test_upscale_patterns_follow_the_module_tree(kind):
    """mlp / mlp+attn / all select the architecture's MLP and attention blocks (Linear and Conv1D
    alike), every parameter under a block shares its router, and `all` covers every parameter."""
    suite = FakeSuite(kind)
    model = suite.backbone
    mlp_cls, attn_cls = (CLIPMLP, CLIPAttention) if kind == "clip" else (GPT2MLP, GPT2Attention)
    blocks = {c: [n for n, m in model.named_modules() if isinstance(m, c)] for c in (mlp_cls, attn_cls)}
    names = list(backbone_params(model))
    under = lambda mods: [p for p in names if any(p.startswith(m + ".") for m in mods)]  # noqa: E731
    g = module_groups(names, "mlp")
    assert list(g) == blocks[mlp_cls] and sum(map(len, g.values())) == len(under(blocks[mlp_cls]))
    g = module_groups(names, "mlp+attn")
    assert sorted(g) == sorted(blocks[mlp_cls] + blocks[attn_cls])
    g = module_groups(names, "all")
    assert sorted(p for ps in g.values() for p in ps) == sorted(names)
    for module in g:                                                       # every group is a real module
        model.get_submodule(module)
    first = module_groups(names, "mlp")[blocks[mlp_cls][0]]               # Conv1D (GPT-2) or Linear (CLIP)
    leaf = "c_fc" if kind == "gpt2" else "fc1"
    assert {f"{blocks[mlp_cls][0]}.{leaf}.weight", f"{blocks[mlp_cls][0]}.{leaf}.bias"} <= set(first)


def test_trainable_params_real_vit_b32_and_gpt2_shapes():
    """(#upscaled modules) × (4T² + 3T): 264 for ViT-B/32, MLP only, 2 tasks (the paper's number)."""
    vit = CLIPVisionModel(CLIPVisionConfig())                              # ViT-B/32, random weights
    names = list(dict(vit.named_parameters()))
    n_mlp = sum(isinstance(m, CLIPMLP) for m in vit.modules())
    n_attn = sum(isinstance(m, CLIPAttention) for m in vit.modules())
    # `all`: MLP and attention blocks, plus per layer 2 LayerNorms, plus the embeddings' class token
    # (owned by `embeddings`), patch conv, position embedding, pre- and post-LayerNorm
    n_all = n_mlp + n_attn + 2 * vit.config.num_hidden_layers + 5
    for upscale, n in (("mlp", n_mlp), ("mlp+attn", n_mlp + n_attn), ("all", n_all)):
        routers = Routers(len(module_groups(names, upscale)), 2)
        assert routers.num_trainable() == n * (4 * 4 + 3 * 2), upscale
    assert Routers(len(module_groups(names, "mlp")), 2).num_trainable() == 264
    with torch.device("meta"):                                             # GPT-2 124M: names only
        gpt2 = GPT2Model(GPT2Config())
    names = list(dict(gpt2.named_parameters()))
    assert len(module_groups(names, "mlp")) == sum(isinstance(m, GPT2MLP) for m in gpt2.modules()) == 12
    assert len(module_groups(names, "all")) == 12 * 4 + 3                  # + wte, wpe, ln_f


@pytest.mark.parametrize("kind", ["clip", "gpt2"])
@pytest.mark.parametrize("upscale", ["mlp", "mlp+attn", "all"])
def test_step0_is_task_arithmetic(kind, upscale):
    """At step 0 the MoE is task arithmetic: every module at its router's output w_m(r) (exactly,
    ≤ 1e-6 on outputs), and w_m(r) = init_lambda + O(router init noise), so the outputs sit within
    1e-3 of TA at λ = 0.3 (the routers' N(0, 0.01²) weights move w by ~1e-4 from 0.3)."""
    suite = FakeSuite(kind)
    plan = build_plan(suite, upscale, 0.3)
    routers = Routers(plan.num_modules, 2, generator=torch.Generator().manual_seed(0))
    moe = PWEMoEModel(suite.backbone, plan, routers)
    inputs = suite.model_inputs()
    ta_fixed = task_arithmetic(suite.theta0(), suite.task_vectors(), [0.3, 0.3])
    dense = CLIPVisionModel(suite.backbone.config) if kind == "clip" else GPT2Model(suite.backbone.config)
    dense.eval()
    worst = 0.0
    for ray in ([1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.3, 0.7]):
        with torch.no_grad():
            w = routers(torch.tensor(ray))
        assert float((w - 0.3).abs().max()) < 1e-3
        # independent reference: bench.core.merge.task_arithmetic per module at the module's λ
        ref = dict(ta_fixed)
        for m, (module, params) in enumerate(plan.groups.items()):
            sub = {p: suite.theta0()[p] for p in params}
            ref.update(task_arithmetic(sub, {p: suite.task_vectors()[p] for p in params}, w[m].tolist()))
        dense.load_state_dict(ref, strict=False)
        out_ref = model_output(dense, inputs)
        out_moe = model_output(moe.set_preference(ray), inputs)
        assert float((out_moe - out_ref).abs().max()) <= 1e-6
        dense.load_state_dict(ta_fixed, strict=False)
        worst = max(worst, float((out_moe - model_output(dense, inputs)).abs().max()))
    print(f"{kind} {upscale}: step-0 MoE vs TA(λ=0.3): max |Δoutput| = {worst:.2e}")
    assert worst < 1e-3


@pytest.mark.parametrize("kind", ["clip", "gpt2"])
def test_unloaded_dense_model_equals_trained_moe(kind):
    """After training, the unloaded dense model (a plain module, no routers) gives the MoE's outputs."""
    suite = FakeSuite(kind)
    plan, routers = trained(suite, "mlp+attn")
    moe = PWEMoEModel(suite.backbone, plan, routers)
    inputs = suite.model_inputs()
    ray = [0.3, 0.7]
    with torch.no_grad():
        assert float((routers(torch.tensor(ray)) - 0.3).abs().max()) > 1e-2    # the routers did move
    dense = CLIPVisionModel(suite.backbone.config) if kind == "clip" else GPT2Model(suite.backbone.config)
    missing, unexpected = dense.load_state_dict(unload(plan, routers, ray), strict=False)
    assert not unexpected and all(k not in dict(dense.named_parameters()) for k in missing)
    out_moe = model_output(moe.set_preference(ray), inputs)
    assert float((model_output(dense.eval(), inputs) - out_moe).abs().max()) <= 1e-5
    assert float((model_output(moe.unload(ray).eval(), inputs) - out_moe).abs().max()) <= 1e-5
    # the documented usage: unloading leaves the MoE usable (unload again, run again)
    other = [0.8, 0.2]
    again = model_output(moe.unload(other).eval(), inputs)
    assert float((again - model_output(moe.set_preference(other), inputs)).abs().max()) <= 1e-5
    assert float((model_output(moe.set_preference(ray), inputs) - out_moe).abs().max()) <= 1e-6
    # the flat training path (suite.features through functional_call) agrees too
    with torch.no_grad():
        feats = suite.features(plan.merge(routers(torch.tensor(ray))), {**inputs})
        assert torch.allclose(feats, suite.features(dict(dense.named_parameters()), inputs), atol=1e-5)


@pytest.mark.parametrize("scalarizer", ["ls", "epo"])
def test_gradients_reach_only_the_routers(scalarizer):
    suite = FakeSuite("clip")
    plan = build_plan(suite, "mlp", 0.3)
    routers = Routers(plan.num_modules, 2, generator=torch.Generator().manual_seed(0))
    for p in suite.heads.parameters():
        p.requires_grad_(True)                                             # even trainable-looking heads stay untouched
    gen = torch.Generator().manual_seed(0)
    batches = [suite.train_batch(t, 8, gen) for t in suite.tasks]
    with suite.frozen():
        router_step(suite, plan, routers, torch.tensor([0.4, 0.6]), batches, scalarizer)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in routers.parameters())
    for t in list(suite.theta0().values()) + list(suite.task_vectors().values()):
        assert not t.requires_grad and t.grad is None
    assert all(p.grad is None for p in suite.backbone.parameters())
    assert all(p.grad is None and p.requires_grad for p in suite.heads.parameters())   # restored, untouched


def test_epo_direction_is_alpha_weighted_router_gradients():
    """pwe_moe_epo's step: Σ α_i ∇_φ L_i with α from bench.methods.epo_solver on C = G Gᵀ, where G is
    recomputed here by brute force (a full backward per task, straight to the router parameters)."""
    from bench.methods.epo_solver import epo_weights

    suite = FakeSuite("gpt2", num_tasks=3)
    plan = build_plan(suite, "mlp", 0.3)
    routers = Routers(plan.num_modules, 3, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    batches = [suite.train_batch(t, 8, gen) for t in suite.tasks]
    ray = torch.tensor([0.2, 0.5, 0.3])
    losses, info = router_step(suite, plan, routers, ray, batches, "epo")
    got = torch.cat([p.grad.reshape(-1) for p in routers.parameters()]).double()
    G = []
    for t, b in zip(suite.tasks, batches):
        loss = suite.loss(plan.merge(routers(ray)), t, b)
        G.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(routers.parameters()))]).double())
    G = torch.stack(G)
    alpha, ref = epo_weights(losses.double().numpy(), (G @ G.T).numpy(), ray.double().numpy())
    assert info["mode"] == ref["mode"] and abs(info["mu"] - ref["mu"]) < 1e-9
    expected = torch.as_tensor(alpha) @ G
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-10 + 1e-4 * float(expected.abs().max()))


# ---- the analytic suite: PWE-MoE recovers the task-arithmetic front ----------------------------
def test_toy_front_lies_on_the_task_arithmetic_front(out):
    """On toy-quadratic with upscale=all (one router over the whole parameter vector), every point of
    the front is close to the closed-form TA-subspace front (NNLS, tasks/toy.py); upscale=mlp has
    nothing to upscale there and says so."""
    from bench.core.record import RunRecord
    from bench.core.registry import SUITES

    assert cli(["run", "method=pwe_moe_ls", "tasks=toy-quadratic", "method.upscale=all", f"out={out}"]) == 0
    path = next(out.glob("toy-quadratic/pwe_moe_ls/*/record.json"))
    rec, F = json.loads(path.read_text()), RunRecord.from_json(path.read_text()).F_included
    pf = SUITES.build("toy-quadratic").true_front(space="ta")
    gd = np.sqrt(((F[:, None] - pf[None]) ** 2).sum(-1)).min(axis=1)
    print(f"toy: GD to the TA front mean {gd.mean():.2e} max {gd.max():.2e}")
    assert gd.mean() < 1e-2 and len(F) == 11
    assert rec["cost"]["trainable_params"] == 1 * (4 * 4 + 3 * 2)
    assert (out / rec["suite"] / rec["method"] / rec["run_id"] / "routers.pt").is_file()
    with pytest.raises(BenchError, match=r"upscale='mlp' selects no module.*valid choices here: all"):
        METHODS.build("pwe_moe_ls").approximate_front(SUITES.build("toy-quadratic"), evaluator=None, seed=0)


def test_same_seed_same_routers():
    suite = FakeSuite("clip")
    a, b = (trained(suite, steps=5)[1] for _ in range(2))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ---- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("pref,msg", [("[0.2,0.3,0.5]", "has 3 entries; the suite has 2 tasks"),
                                      ("[-0.2,1.2]", "negative"),
                                      ("[0.3,0.6]", "must sum to 1"),
                                      ("[a,b]", "must be a list of numbers")])
def test_export_rejects_bad_preferences(out, tmp_path, capsys, pref, msg):
    assert cli(["run", "method=pwe_moe_ls", "tasks=toy-quadratic", "method.upscale=all", "method.steps=5",
                f"out={out}"]) == 0
    capsys.readouterr()
    code = cli(["export", "method=pwe_moe_ls", "tasks=toy-quadratic", f"preference={pref}",
                f"runs={out}", f"out={tmp_path / 'exp'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and msg in err, err
    assert not (tmp_path / "exp").exists()


def test_export_without_a_run_says_which_run_to_do(out, tmp_path, capsys):
    code = cli(["export", "method=pwe_moe_epo", "tasks=toy-quadratic", "method.upscale=all",
                "preference=[0.5,0.5]", f"runs={out}", f"out={tmp_path / 'exp'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert re.search(r"no pwe_moe_epo run .* run it first: python -m bench run method=pwe_moe_epo "
                     r"tasks=toy-quadratic method.upscale=all out=", err), err


@pytest.mark.parametrize("method,extra", [("phn", []), ("pareto_merging", ["method.targets=all"])])
def test_export_of_conditioned_methods_warns_nothing(out, tmp_path, capsys, method, extra):
    """The export's description (mean λ, the correction's size) is computed without autograd: no torch warning."""
    import warnings

    args = [f"method={method}", "tasks=toy-quadratic", "method.steps=5", *extra]
    assert cli(["run", *args, f"out={out}"]) == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli(["export", *args, "preference=[0.3,0.7]", f"runs={out}", f"out={tmp_path / 'exp'}"]) == 0
    assert not [w for w in caught if issubclass(w.category, UserWarning)], [str(w.message) for w in caught]
    info = json.loads((tmp_path / "exp" / "export.json").read_text())
    assert info["preference"] == [0.3, 0.7] and ("mean_lambda" in info or "relative_correction" in info)
    assert Path(info["run"]).is_absolute() and Path(info["rebuild"]["state_file"]).parent == Path(info["run"])


# ---- the offline suites, end to end through the CLI --------------------------------------------
# digits and dots: the pair whose task vectors conflict most (shared/notes/tiny-clip-prototype.md)
CLIP_TASKS = "tasks.names=[digits,dots]"


def _record(out, suite: str, method: str) -> dict:
    path = next((out / suite / method).glob("*/record.json"))
    return {**json.loads(path.read_text()), "_dir": path.parent}


@pytest.fixture(scope="module")
def clip_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip-runs")
    for method in ("ta_grid", "pwe_moe_ls"):
        assert cli(["run", f"method={method}", "tasks=tiny-clip", CLIP_TASKS, f"out={out}"]) == 0
    return out


def test_tiny_clip_front_beats_task_arithmetic_line(clip_runs):
    """pwe_moe_ls (11 rays) has a higher HV than ta_grid mode=shared (11 λ) on tiny-clip, 2 tasks."""
    pwe, ta = _record(clip_runs, "tiny-clip", "pwe_moe_ls"), _record(clip_runs, "tiny-clip", "ta_grid")
    print(f"tiny-clip digits+dots HV: pwe_moe_ls {pwe['indicators']['hv']:.4f} "
          f"({pwe['cost']['train_steps']} steps, {pwe['cost']['trainable_params']} router parameters) vs "
          f"ta_grid shared {ta['indicators']['hv']:.4f}")
    assert pwe["indicators"]["n_points"] == ta["indicators"]["n_points"] == 11
    assert pwe["indicators"]["hv"] > ta["indicators"]["hv"]
    assert all(len(p["routing"]) == 3 and len(p["ray"]) == 2 for p in pwe["points"])


def test_tiny_clip_export_reloads_and_scores_like_the_record(clip_runs, tmp_path):
    """The trained count is (#CLIPMLP blocks) × (4T² + 3T); `bench export` writes a CLIPVisionModel
    that from_pretrained reloads with the MoE's outputs, and that scores exactly the record's point."""
    from safetensors.torch import load_file

    from bench.core.evaluator import Evaluator
    from bench.core.registry import SUITES
    from bench.methods.pwe_moe import load_state

    rec = _record(clip_runs, "tiny-clip", "pwe_moe_ls")
    suite = SUITES.build("tiny-clip", names=["digits", "dots"])
    n_mlp = sum(isinstance(m, CLIPMLP) for m in suite.backbone.modules())
    assert rec["cost"]["trainable_params"] == n_mlp * (4 * 2 ** 2 + 3 * 2)
    dest = tmp_path / "exported"
    assert cli(["export", "method=pwe_moe_ls", "tasks=tiny-clip", CLIP_TASKS, "preference=[0.3,0.7]",
                f"runs={clip_runs}", f"out={dest}"]) == 0
    model = CLIPVisionModel.from_pretrained(dest).eval()
    _, plan, routers = load_state(str(rec["_dir"] / "routers.pt"), suite)
    moe = PWEMoEModel(suite.backbone, plan, routers).set_preference([0.3, 0.7])
    batch = suite.prepare({k: v[:64] for k, v in suite.eval_data("digits", "test").items()}, torch.device("cpu"))
    with torch.no_grad():
        a = moe(pixel_values=batch["pixel_values"]).pooler_output
        b = model(pixel_values=batch["pixel_values"]).pooler_output
    assert float((a - b).abs().max()) <= 1e-5
    heads = load_file(dest / "heads.safetensors")
    assert all(torch.equal(heads[f"{t}.weight"], suite.heads[t].weight) for t in suite.tasks)
    info = json.loads((dest / "export.json").read_text())
    assert info["run_id"] == rec["run_id"] and info["preference"] == [0.3, 0.7]
    point = next(p for p in rec["points"] if np.allclose(p["ray"], [0.3, 0.7]))
    got = Evaluator(suite).evaluate(dict(model.named_parameters()), "test")
    assert {t: got[t]["accuracy"] for t in suite.tasks} == {t: point["metrics"][t]["accuracy"] for t in suite.tasks}


def test_tiny_gpt2_conv1d_end_to_end(tmp_path):
    """GPT-2 (Conv1D weights) through the same code: run, router count, export, from_pretrained."""
    from bench.core.registry import SUITES
    from bench.methods.pwe_moe import load_state

    names = SUITES.build("tiny-gpt2").tasks[:2]
    subset = f"tasks.names=[{','.join(names)}]"
    out = tmp_path / "runs"
    assert cli(["run", "method=pwe_moe_epo", "tasks=tiny-gpt2", subset, "method.steps=30", f"out={out}"]) == 0
    rec = _record(out, "tiny-gpt2", "pwe_moe_epo")
    suite = SUITES.build("tiny-gpt2", names=names)
    n_mlp = sum(isinstance(m, GPT2MLP) for m in suite.backbone.modules())
    assert n_mlp > 0 and rec["cost"]["trainable_params"] == n_mlp * (4 * 2 ** 2 + 3 * 2)
    assert rec["meta"]["batch_size"] == 8 and rec["meta"]["epo_fallbacks"] >= 0
    dest = tmp_path / "exported"
    assert cli(["export", "method=pwe_moe_epo", "tasks=tiny-gpt2", subset, "preference=[0.5,0.5]",
                f"runs={out}", f"out={dest}"]) == 0
    model = type(suite.backbone).from_pretrained(dest).eval()
    _, plan, routers = load_state(str(rec["_dir"] / "routers.pt"), suite)
    moe = PWEMoEModel(suite.backbone, plan, routers).set_preference([0.5, 0.5])
    data = suite.prepare({k: v[:32] for k, v in suite.eval_data(names[0], "test").items()}, torch.device("cpu"))
    inputs = {k: data[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        a, b = moe(**inputs)[0], model(**inputs)[0]
    assert float((a - b).abs().max()) <= 1e-5
