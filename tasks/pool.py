"""pool: a suite declared in a YAML file, no code: a base checkpoint and, per task, a fine-tuned
checkpoint or a PEFT LoRA adapter, a dataset, its splits and columns.

    python -m bench run method=ta_grid tasks=pool tasks.spec=my_pool.yaml
    python -m bench run method=map tasks=pool tasks.spec=examples/pools/gpt2-glue.yaml 'tasks.names=[cola,sst2]'

docs/add-a-model-pool.md is the user's page (every key, a LoRA example, the errors); examples/pools/
writes the published suites this way (clip-vit-b32.yaml mirrors tasks/clip.py, gpt2-glue.yaml
tasks/gpt2_glue.py). Families:

- `image_classification`: `AutoModelForImageClassification` (ViT, …). Merged: the base model
  (`model.base_model`, e.g. `vit`); heads: every parameter outside it (`classifier`), per task from
  its checkpoint or from the adapter's saved `modules_to_save`. Logits are the architecture's own
  forward (`torch.func.functional_call` on one model: merged body + the task's head), so its own
  pooling is used. Images: the base's preprocessor_config.json (resize, crop, mean, std), cached as
  uint8 once per split (`bench.tasks.clip.write_images`).
- `text_classification`: `AutoModelForSequenceClassification` (GPT-2, BERT, …), the same split
  into body and per-task heads (GPT-2 `score`, BERT `classifier`; BERT's pooler is in the body);
  the base's tokenizer (`bench.tasks.gpt2_glue.tokenize`: pairs as pairs, right padding, BERT's
  token type ids), truncated at `max_length`.
- `clip_zeroshot`: the CLIP vision tower as tasks/clip.py merges it (`bench.tasks.clip_backends.hf_clip`),
  zero-shot heads from the base's text tower with class names and templates
  (`bench.tasks.clip.zeroshot_weights`, cached under the published suites' key).

Task vectors: a checkpoint is loaded and subtracted from θ0 one at a time (never T models alive at
once); an adapter is read from adapter_config.json + adapter_model.safetensors without peft:
τ = scaling · B A per target module (scaling = alpha/r, alpha/√r with use_rslora, alpha_pattern
honoured; transposed for fan_in_fan_out / Conv1D layers such as GPT-2's c_attn), and its
`modules_to_save` tensors are full values (a head, or a body parameter: τ = value − θ0).
Every check (YAML keys and types with file:line, ids, architectures, adapters' base, splits,
columns, labels) is a one-line BenchError raised while the suite is built, before a record exists.
"""
from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.func import functional_call

from bench.api import BenchError, Params, check_compatible, unknown_choice
from bench.tasks import hub
from bench.tasks.base import ModelSuite, check_eval_size, select_tasks
from bench.tasks.cache import cache_root, cached_build
from bench.tasks.models import backbone_params, quiet_hf, trim_padding

FAMILIES = ("image_classification", "clip_zeroshot", "text_classification")
FORMATS = ("parquet", "csv", "imagefolder")
AUTO = {"image_classification": "AutoModelForImageClassification",
        "text_classification": "AutoModelForSequenceClassification"}
CLIP_TYPES = ("clip", "clip_vision_model")      # a CLIP pool's checkpoints: full CLIPModels or vision towers
CACHE_VERSION = "1"                             # of the cached arrays: bump when they change for the same inputs
DEFAULT_TEMPLATES = ("a photo of a {}.",)
# input columns tried in order when a text task names none (GLUE's pairs first)
TEXT_INPUTS = (("sentence1", "sentence2"), ("premise", "hypothesis"), ("question1", "question2"),
               ("question", "sentence"), ("sentence",), ("text",))
IMAGE_INPUTS = ("image", "img")
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

TOP_KEYS = ("family", "base", "tasks", "name", "exclude", "base_aliases", "max_length", "templates")
TASK_KEYS = ("model", "adapter", "dataset", "format", "data_files", "data_dir", "splits", "inputs", "label",
             "label_names", "templates")
SPLIT_ROLES = ("train", "val", "test")


# ---- the YAML: nodes with their lines, checked key by key ------------------------------------------------
@dataclass
class Node:
    """A YAML value and the line it starts on: a scalar, a list of Nodes or a dict of Nodes."""

    value: Any
    line: int
    kind: str          # scalar | seq | map


class _Doc:
    """One pool file: its nodes, and one-line errors that say `file:line: key ...`."""

    def __init__(self, path: Path):
        import yaml

        self.path = path
        try:
            self.text = path.read_text()
        except OSError as e:
            raise BenchError(f"tasks.spec={str(path)!r} cannot be read ({e.strerror or e})") from None
        self.sha256 = hashlib.sha256(self.text.encode()).hexdigest()
        try:
            loader = yaml.SafeLoader(self.text)
            try:
                node = loader.get_single_node()
            finally:
                loader.dispose()
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
            why = " ".join(str(getattr(e, "problem", None) or e).split())
            raise BenchError(f"{path}:{mark.line + 1 if mark else 1}: not valid YAML ({why})") from None
        self._construct = yaml.constructor.SafeConstructor()
        self.root = self._node(node) if node is not None else Node(None, 1, "scalar")

    def _node(self, n) -> Node:
        import yaml

        line = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            out: dict[str, Node] = {}
            for k, v in n.value:
                key = self._construct.construct_object(k) if isinstance(k, yaml.ScalarNode) else None
                if not isinstance(key, (str, int, float)) or isinstance(key, bool):
                    raise self.error(k.start_mark.line + 1, f"a key must be a name, got {k.value!r}")
                key = str(key)
                if key in out:
                    raise self.error(k.start_mark.line + 1, f"key {key!r} appears twice in one mapping")
                out[key] = self._node(v)
            return Node(out, line, "map")
        if isinstance(n, yaml.SequenceNode):
            return Node([self._node(v) for v in n.value], line, "seq")
        return Node(self._construct.construct_object(n), line, "scalar")

    def error(self, line: int, msg: str) -> BenchError:
        return BenchError(f"{self.path}:{line}: {msg}")

    # typed accessors: `where` is the key's path (tasks.cola.model)
    def mapping(self, node: Node, where: str, keys: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Node]:
        if node.kind != "map":
            raise self.error(node.line, f"{where} must be a mapping (key: value lines), got {_describe(node)}")
        for k in node.value:
            if k not in keys:
                raise self.error(node.value[k].line, unknown_choice(f"key in {where}:", k, list(keys)))
        for k in required:
            if k not in node.value:
                raise self.error(node.line, f"{where} has no key {k!r} (required: {', '.join(required)})")
        return node.value

    def string(self, node: Node, where: str) -> str:
        if node.kind != "scalar" or not isinstance(node.value, str) or not node.value.strip():
            raise self.error(node.line, f"{where} must be a non-empty string, got {_describe(node)}")
        return node.value.strip()

    def strings(self, node: Node, where: str, one: bool = False) -> tuple[str, ...]:
        """A list of strings (or, with `one`, a single string too)."""
        if one and node.kind == "scalar":
            return (self.string(node, where),)
        if node.kind != "seq" or not node.value:
            raise self.error(node.line, f"{where} must be a non-empty list of strings"
                                        f"{' (or one string)' if one else ''}, got {_describe(node)}")
        return tuple(self.string(v, f"{where}[{i}]") for i, v in enumerate(node.value))

    def integer(self, node: Node, where: str, lo: int) -> int:
        if node.kind != "scalar" or not isinstance(node.value, int) or isinstance(node.value, bool):
            raise self.error(node.line, f"{where} must be an integer, got {_describe(node)}")
        if node.value < lo:
            raise self.error(node.line, f"{where}={node.value} must be ≥ {lo}")
        return node.value


def _describe(node: Node) -> str:
    if node.kind == "map":
        return "a mapping"
    if node.kind == "seq":
        return "an empty list" if not node.value else "a list"
    if node.value is None:
        return "nothing (null)"
    return f"{type(node.value).__name__} {node.value!r}"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    line: int
    model: str | None                      # a fine-tuned checkpoint (hub id or local directory)
    adapter: str | None                    # a PEFT LoRA adapter (hub id or local directory)
    dataset: str | None                    # hub id[:config], save_to_disk folder or hub-layout folder
    format: str | None                     # parquet | csv | imagefolder (with data_files or data_dir)
    data_files: Any                        # str | [str] | {split: str | [str]} (local paths, globs)
    data_dir: str | None
    splits: dict[str, str]                 # role (train, test, val if given) → the dataset's split name
    inputs: tuple[str, ...] | None
    label: str
    label_names: tuple[str, ...] | None
    templates: tuple[str, ...] | None
    lines: dict[str, int] = field(default_factory=dict)    # key → line

    @property
    def checkpoint(self) -> str:
        return self.model or self.adapter or ""

    def at(self, key: str) -> int:
        return self.lines.get(key, self.line)


@dataclass(frozen=True)
class PoolSpec:
    path: Path
    sha256: str
    text: str
    family: str
    base: str
    tasks: dict[str, TaskSpec]
    name: str | None = None
    exclude: tuple[str, ...] = ()
    base_aliases: tuple[str, ...] = ()
    max_length: int = 512
    templates: tuple[str, ...] | None = None
    lines: dict[str, int] = field(default_factory=dict)

    def where(self, key: str, task: TaskSpec | None = None) -> str:
        """`file:line: key` of a top-level key or of a task's key, for messages."""
        if task is not None:
            return f"{self.path}:{task.at(key)}: tasks.{task.name}.{key}"
        return f"{self.path}:{self.lines.get(key, 1)}: {key}"


def load_spec(path: str | os.PathLike) -> PoolSpec:
    """Parse and check a pool file: keys, types, choices, local paths; nothing is loaded or fetched.
    Local paths in it are relative to the file's folder."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BenchError(f"tasks.spec={str(path)!r}: no such file (give the pool's YAML file)")
    doc = _Doc(path)
    if doc.root.kind != "map":
        raise doc.error(doc.root.line, f"a pool file is a mapping with keys {', '.join(TOP_KEYS[:3])} …, got "
                                       f"{_describe(doc.root)}")
    top = doc.mapping(doc.root, "the pool", TOP_KEYS, ("family", "base", "tasks"))
    lines = {k: v.line for k, v in top.items()}
    family = doc.string(top["family"], "family")
    if family not in FAMILIES:
        raise doc.error(top["family"].line, unknown_choice("family", family, list(FAMILIES)))
    here = path.parent
    base = _local(doc.string(top["base"], "base"), here)
    kw: dict[str, Any] = {}
    if "name" in top:
        kw["name"] = doc.string(top["name"], "name")
    for key in ("exclude", "base_aliases"):
        if key in top:
            kw[key] = doc.strings(top[key], key, one=True)
    if "base_aliases" in kw:
        kw["base_aliases"] = tuple(_local(a, here) for a in kw["base_aliases"])
    if "max_length" in top:
        kw["max_length"] = doc.integer(top["max_length"], "max_length", 2)
    if "templates" in top:
        kw["templates"] = _templates(doc, top["templates"], "templates")
    tasks_node = top["tasks"]
    if tasks_node.kind != "map" or not tasks_node.value:
        raise doc.error(tasks_node.line, f"tasks must be a mapping of task name → its checkpoint and data, got "
                                         f"{_describe(tasks_node)}")
    tasks = {}
    for name, node in tasks_node.value.items():
        if not TASK_NAME.fullmatch(name):
            raise doc.error(node.line, f"task name {name!r} must be letters, digits, '.', '_' or '-' "
                                       f"(it names cache folders)")
        tasks[name] = _task(doc, name, node, family, here)
    return PoolSpec(path=path, sha256=doc.sha256, text=doc.text, family=family, base=base, tasks=tasks,
                    lines=lines, **kw)


def _task(doc: _Doc, name: str, node: Node, family: str, here: Path) -> TaskSpec:
    w = f"tasks.{name}"
    d = doc.mapping(node, w, TASK_KEYS)
    lines = {k: v.line for k, v in d.items()}
    model = _local(doc.string(d["model"], f"{w}.model"), here) if "model" in d else None
    adapter = _local(doc.string(d["adapter"], f"{w}.adapter"), here) if "adapter" in d else None
    if (model is None) == (adapter is None):
        raise doc.error(node.line, f"{w} needs exactly one of model: (a fine-tuned checkpoint) or adapter: "
                                   f"(a PEFT LoRA adapter), {'not both' if model else 'found neither'}")
    sources = [k for k in ("dataset", "data_files", "data_dir") if k in d]
    if len(sources) != 1:
        raise doc.error(node.line, f"{w} needs exactly one of dataset: (hub id or folder), data_files: or data_dir: "
                                   f"(with format: {'|'.join(FORMATS)}), "
                                   f"{'not ' + ' and '.join(sources) if sources else 'found none'}")
    dataset = data_files = data_dir = fmt = None
    if "dataset" in d:
        if "format" in d:
            raise doc.error(d["format"].line, f"{w}.format goes with data_files: or data_dir:, not dataset:")
        spec = doc.string(d["dataset"], f"{w}.dataset")
        head, config = hub.split_config(spec)
        dataset = _local(head, here) + (f":{config}" if config else "")
    else:
        if "format" not in d:
            raise doc.error(node.line, f"{w} has no key 'format' (required with {sources[0]}: one of "
                                       f"{', '.join(FORMATS)})")
        fmt = doc.string(d["format"], f"{w}.format")
        if fmt not in FORMATS:
            raise doc.error(d["format"].line, unknown_choice(f"{w}.format", fmt, list(FORMATS)))
        if "data_dir" in d:
            data_dir = _local(doc.string(d["data_dir"], f"{w}.data_dir"), here)
            if not Path(data_dir).is_dir():
                raise doc.error(d["data_dir"].line, f"{w}.data_dir={data_dir!r}: no such directory")
        else:
            data_files = _data_files(doc, d["data_files"], f"{w}.data_files", here)
    splits = {"train": "train", "test": "test"}
    if "splits" in d:
        sn = doc.mapping(d["splits"], f"{w}.splits", SPLIT_ROLES)
        splits.update({k: doc.string(v, f"{w}.splits.{k}") for k, v in sn.items()})
        if splits["train"] == splits["test"] or splits["test"] == splits.get("val"):
            raise doc.error(d["splits"].line, f"{w}.splits uses split {splits['test']!r} twice; the test split must "
                                              f"be its own (val is carved from train when no split is named)")
        lines.update({f"splits.{k}": v.line for k, v in sn.items()})
    inputs = doc.strings(d["inputs"], f"{w}.inputs", one=True) if "inputs" in d else None
    if inputs is not None and family != "text_classification" and len(inputs) != 1:
        raise doc.error(d["inputs"].line, f"{w}.inputs names {len(inputs)} columns; an image task has one (the images)")
    if inputs is not None and len(inputs) > 2:
        raise doc.error(d["inputs"].line, f"{w}.inputs names {len(inputs)} columns; a text task has one, or two "
                                          f"(a sentence pair)")
    label = doc.string(d["label"], f"{w}.label") if "label" in d else "label"
    label_names = doc.strings(d["label_names"], f"{w}.label_names") if "label_names" in d else None
    templates = _templates(doc, d["templates"], f"{w}.templates") if "templates" in d else None
    if templates is not None and family != "clip_zeroshot":
        raise doc.error(d["templates"].line, f"{w}.templates is for family clip_zeroshot, not {family}")
    return TaskSpec(name=name, line=node.line, model=model, adapter=adapter, dataset=dataset, format=fmt,
                    data_files=data_files, data_dir=data_dir, splits=splits, inputs=inputs, label=label,
                    label_names=label_names, templates=templates, lines=lines)


def _templates(doc: _Doc, node: Node, where: str) -> tuple[str, ...]:
    out = doc.strings(node, where)
    for i, t in enumerate(out):
        if "{}" not in t:
            raise doc.error(node.value[i].line, f"{where}[{i}]={t!r} has no {{}} where the class name goes")
    return out


def _data_files(doc: _Doc, node: Node, where: str, here: Path):
    """str | [str] | {split: str | [str]}, each a local path or glob relative to the pool file; each must match."""
    def files(n: Node, w: str) -> list[str]:
        out = []
        for p in doc.strings(n, w, one=True):
            full = _local(p, here)
            if not glob.glob(full, recursive=True):
                raise doc.error(n.line, f"{w}={p!r} matches no file (paths are relative to {doc.path.name}'s folder)")
            out.append(full)
        return out

    if node.kind == "map":
        return {split: files(n, f"{where}.{split}") for split, n in node.value.items()}
    return files(node, where)


def _local(value: str, here: Path) -> str:
    """A path relative to the pool file's folder (`./x`, `../x`, or an existing `x`), else as written
    (a hub id, or an absolute path)."""
    if value.startswith("~"):
        return str(Path(value).expanduser())
    if os.path.isabs(value):
        return value
    if value.startswith(("./", "../")) or value in (".", ".."):
        return os.path.normpath(here / value)
    if (here / value).exists() or glob.glob(str(here / value), recursive=True):
        return os.path.normpath(here / value)
    return value


# ---- the suite -------------------------------------------------------------------------------------------
class PoolSuite(ModelSuite):
    """A suite declared in YAML: base checkpoint + per task a fine-tuned checkpoint or a LoRA adapter and a dataset."""

    name = "pool"
    version = "1"
    objective = "accuracy"
    streams_train = True           # train examples prepared as drawn, never the whole split

    def __init__(self,
                 spec: str | None = None,  # the pool's YAML file (docs/add-a-model-pool.md; examples/pools/)
                 names: list[str] | None = None,  # a subset of the file's tasks (null: all, in the file's order)
                 preprocess_workers: int = 4,  # threads preprocessing images (val/test once; train batches as drawn)
                 eval_size: int | None = None,  # val/test examples per task: a stratified seeded subset (null: all)
                 eval_seed: int = 0):  # seeds the eval_size subset
        if spec is None or not str(spec).strip():
            raise BenchError("tasks.spec is not set: give the pool's YAML file, e.g. tasks=pool tasks.spec=my_pool.yaml "
                             "(docs/add-a-model-pool.md)")
        if preprocess_workers < 1:
            raise BenchError(f"tasks.preprocess_workers={preprocess_workers} must be ≥ 1")
        check_eval_size(eval_size)
        self.eval_size, self.eval_seed = eval_size, eval_seed
        self.spec = load_spec(spec)
        sp = self.spec
        self.family = sp.family
        self.modality = "text" if sp.family == "text_classification" else "image"
        self.train_batch_size = 8 if self.modality == "text" else 16      # the published suites' choices
        self.preprocess_workers = preprocess_workers
        self.tasks = select_tasks(None if names is None else list(names), list(sp.tasks), self.name)
        if len(self.tasks) < 2:
            raise BenchError(f"{sp.path}: the pool has {len(self.tasks)} task ({', '.join(self.tasks)}); a Pareto "
                             f"front needs at least 2")
        self._data = {t: {} for t in self.tasks}
        self._sources: dict[str, dict] = {}
        specs = [sp.tasks[t] for t in self.tasks]
        # 1. every id at once (one error naming every missing one), then what each one is
        refs = [hub.Ref(sp.base, sp.where("base"))]
        refs += [hub.Ref(t.checkpoint, sp.where("model" if t.model else "adapter", t)) for t in specs]
        data_refs = {t.name: self._data_ref(t) for t in specs if t.dataset is not None}
        paths = hub.resolve([*refs, *data_refs.values()])
        self.revisions = {r.spec: hub.fingerprint(paths[r.spec]) for r in [*refs, *data_refs.values()]}
        base_cfg = _config_json(paths[sp.base], sp.where("base"), sp.base)
        for t in specs:
            if t.model is not None:
                self._check_architecture(t, base_cfg, paths[t.model])
            else:
                self._check_adapter(t, paths[t.adapter], paths[sp.base])
        # 2. data: splits and columns (cheap), before any weights are read
        for t in specs:
            self._open_data(t, paths, data_refs.get(t.name))
        # 3. θ0, task vectors and heads; then labels against the heads
        if sp.family == "clip_zeroshot":
            self._build_clip(specs, paths)
        else:
            self._build_classifier(specs, paths, base_cfg)
        for t in specs:
            self._check_labels(t)
        self.heads.eval().requires_grad_(False)
        for m in self.frozen_modules():
            m.eval().requires_grad_(False)

    # ---- ids, configs, adapters --------------------------------------------------------------------------
    def _data_ref(self, t: TaskSpec) -> hub.Ref:
        named = tuple(dict.fromkeys(t.splits[r] for r in ("train", "test", "val") if r in t.splits))
        optional = () if "val" in t.splits or "validation" in named else ("validation",)
        return hub.Ref(t.dataset, self.spec.where("dataset", t), "dataset", splits=named, optional=optional)

    def _check_architecture(self, t: TaskSpec, base_cfg: dict, path: Path) -> None:
        cfg = _config_json(path, self.spec.where("model", t), t.model)
        ours, theirs = base_cfg.get("model_type"), cfg.get("model_type")
        same = ours == theirs or (ours in CLIP_TYPES and theirs in CLIP_TYPES)
        if not same:
            raise BenchError(f"{self.spec.where('model', t)}: task {t.name!r}: {t.model!r} is a {_arch(cfg)} "
                             f"(model_type {theirs}), the base {self.spec.base!r} a {_arch(base_cfg)} (model_type {ours}); "
                             f"every checkpoint must be fine-tuned from the pool's base")

    def _check_adapter(self, t: TaskSpec, path: Path, base_path: Path) -> None:
        where = self.spec.where("adapter", t)
        cfg_file = Path(path) / "adapter_config.json"
        if not cfg_file.is_file():
            raise BenchError(f"{where}={t.adapter!r} has no adapter_config.json (not a PEFT adapter folder; a full "
                             f"checkpoint goes under model:)")
        try:
            cfg = json.loads(cfg_file.read_text())
        except ValueError as e:
            raise BenchError(f"{where}: {str(cfg_file)!r} is not JSON ({e})") from None
        if str(cfg.get("peft_type", "")).upper() != "LORA":
            raise BenchError(f"{where}={t.adapter!r} is a {cfg.get('peft_type')!r} adapter; only LoRA adapters "
                             f"(peft_type LORA) have a task vector here")
        for flag in ("use_dora", "use_qalora"):
            if cfg.get(flag):
                raise BenchError(f"{where}={t.adapter!r} sets {flag}; only plain LoRA (and rsLoRA) adapters are read")
        if cfg.get("trainable_token_indices"):
            raise BenchError(f"{where}={t.adapter!r} trains token embeddings (trainable_token_indices), "
                             f"which are not read; use modules_to_save for the embedding")
        recorded = cfg.get("base_model_name_or_path")
        ours = {_identity(str(base_path)), _identity(self.spec.base), *(_identity(a) for a in self.spec.base_aliases)}
        if not recorded:
            raise BenchError(f"{where}={t.adapter!r} records no base_model_name_or_path in adapter_config.json; set it "
                             f"to the pool's base {self.spec.base!r}")
        if _identity(str(recorded)) not in ours:
            raise BenchError(f"{where}: task {t.name!r}: adapter {t.adapter!r} was trained on {recorded!r}, not the "
                             f"pool's base {self.spec.base!r} (resolved {_identity(str(base_path))}); if both are the "
                             f"same checkpoint, list {recorded!r} under base_aliases:")
        if not (Path(path) / "adapter_model.safetensors").is_file() and not (Path(path) / "adapter_model.bin").is_file():
            raise BenchError(f"{where}={t.adapter!r} has no adapter_model.safetensors")
        self._sources.setdefault(t.name, {})["adapter_config"] = cfg

    # ---- data --------------------------------------------------------------------------------------------
    def _open_data(self, t: TaskSpec, paths: dict[str, Path], ref: hub.Ref | None) -> None:
        import datasets

        what = (f"dataset {t.dataset!r} ({t.name})" if t.dataset else
                f"the {t.format} {'data_dir' if t.data_dir else 'data_files'} of task {t.name!r}")
        where = self.spec.where("dataset" if t.dataset else "data_dir" if t.data_dir else "data_files", t)
        if ref is not None:
            dd = hub.load_dataset_dict(paths[t.dataset], ref)
            fp = self.revisions[t.dataset]
        else:
            with quiet_hf():
                try:
                    dd = datasets.load_dataset(t.format, data_files=t.data_files, data_dir=t.data_dir)
                except Exception as e:     # datasets raises many kinds for unreadable files
                    raise BenchError(f"{where}: {what} cannot be read as {t.format} "
                                     f"({type(e).__name__}: {' '.join(str(e).split())[:240]})") from None
            files = sorted({f for p in _flat_files(t.data_files) for f in glob.glob(p, recursive=True)}) \
                if t.data_files is not None else [t.data_dir]
            fp = hub.digest([t.format, *[(f, hub.fingerprint(Path(f))) for f in files]])
        names = list(dd.keys())
        for role in ("train", "test", "val"):
            s = t.splits.get(role)
            if s is not None and s not in names:
                raise BenchError(f"{self.spec.where('splits.' + role if 'splits.' + role in t.lines else 'splits', t)}: "
                                 f"{what} has no split {s!r} ({role}); its splits: {', '.join(names)}")
        train, test = t.splits["train"], t.splits["test"]
        val = t.splits.get("val") or next((s for s in ("validation", "val", "valid") if s in names and s not in
                                           (train, test)), None)
        if val is not None:
            sp = {"train": (train, None), "val": (val, None), "test": (test, None)}
        else:
            tr, va = hub.carve(len(dd[train]))
            sp = {"train": (train, tr), "val": (train, va), "test": (test, None)}
        cols = list(dd[train].column_names)
        if t.inputs is not None:
            inputs = t.inputs
        elif self.modality == "image":
            inputs = (hub.pick(cols, IMAGE_INPUTS, f"{where}: {what}", "image (give inputs:)"),)
        else:
            inputs = next((c for c in TEXT_INPUTS if all(x in cols for x in c)), None)
            if inputs is None:
                raise BenchError(f"{where}: {what} has none of the usual text columns; name them with inputs: "
                                 f"[column] or [column1, column2]; its columns: {', '.join(cols)}")
        for split in dict.fromkeys(s for s in (train, val, test) if s is not None):
            present = list(dd[split].column_names)
            for c in [*inputs, t.label]:
                if c not in present:
                    key = "label" if c == t.label else "inputs"
                    raise BenchError(f"{self.spec.where(key, t)}: {what} has no column {c!r} ({key}) in split "
                                     f"{split!r}; its columns: {', '.join(present)}")
        feature = dd[train].features[t.label]
        self._sources.setdefault(t.name, {}).update(
            dd=dd, splits=sp, inputs=inputs, label_col=t.label, what=what, data_fp=fp,
            class_names=list(getattr(feature, "names", None) or []) or None,
            string_labels=getattr(feature, "dtype", None) in ("string", "large_string"))

    def _check_labels(self, t: TaskSpec) -> None:
        """Label names against the head, and every split's labels in 0..C−1 (string labels via label_names)."""
        src = self._sources[t.name]
        n = src["num_classes"]
        if t.label_names is not None and len(t.label_names) != n:
            raise BenchError(f"{self.spec.where('label_names', t)}: {len(t.label_names)} label names, but the head of "
                             f"{t.name!r} has {n} outputs")
        if src["class_names"] is not None and len(src["class_names"]) != n:
            raise BenchError(f"{self.spec.where('label', t)}: {src['what']} has {len(src['class_names'])} classes "
                             f"(ClassLabel of {t.label!r}), the head of {t.name!r} {n} outputs")
        if src["string_labels"] and t.label_names is None:
            raise BenchError(f"{self.spec.where('label', t)}: {src['what']}'s label column {t.label!r} holds strings; "
                             f"give label_names: [...] (their order is the head's)")
        for split in src["splits"]:
            self.split_labels(t.name, split)

    def _labels(self, task: str, ds, idx: np.ndarray | None, split_name: str) -> np.ndarray:
        src, t = self._sources[task], self.spec.tasks[task]
        raw = ds[src["label_col"]] if idx is None else ds.select(idx.tolist())[src["label_col"]]
        raw = list(raw)
        if src["string_labels"]:
            index = {s: i for i, s in enumerate(t.label_names)}
            bad = next((v for v in raw if v not in index), None)
            if bad is not None:
                raise BenchError(f"{self.spec.where('label_names', t)}: {src['what']} split {split_name!r} has label "
                                 f"{bad!r}, which label_names does not list")
            labels = np.array([index[v] for v in raw], dtype=np.int64)
        else:
            labels = np.asarray(raw, dtype=np.int64)
        n = src["num_classes"]
        if len(labels) and (labels.min() < 0 or labels.max() >= n):
            raise BenchError(f"{self.spec.where('label', t)}: {src['what']} split {split_name!r} has labels outside "
                             f"0..{n - 1} (the head of {task!r} has {n} outputs)")
        return labels

    # ---- classifiers: image_classification, text_classification ---------------------------------------------
    def _build_classifier(self, specs: list[TaskSpec], paths: dict[str, Path], base_cfg: dict) -> None:
        import transformers

        sp = self.spec
        auto = getattr(transformers, AUTO[sp.family])
        with quiet_hf(), torch.random.fork_rng(devices=[]):    # a base without a head initialises one: not
            try:                                                  # from the run's seeded generator
                model = auto.from_pretrained(str(paths[sp.base]))
            except ValueError as e:
                raise BenchError(f"{sp.where('base')}={sp.base!r} ({_arch(base_cfg)}) has no {AUTO[sp.family]} "
                                 f"architecture for family {sp.family} ({' '.join(str(e).split())[:160]})") from None
            except OSError as e:
                raise BenchError(f"{sp.where('base')}={sp.base!r} cannot be loaded ({' '.join(str(e).split())[:200]})") from None
        model.eval()
        prefix = model.base_model_prefix
        if not prefix or getattr(model, prefix, None) is None:
            raise BenchError(f"{sp.where('base')}: {type(model).__name__} has no base model to merge apart from its head")
        self.model, self._prefix, self._auto = model, prefix, auto
        self.backbone = getattr(model, prefix)
        self._head_names = [n for n, _ in model.named_parameters() if not n.startswith(prefix + ".")]
        if not self._head_names:
            raise BenchError(f"{sp.where('base')}: {type(model).__name__} has no parameters outside its base model "
                             f"(no classification head)")
        self._theta0 = self._merged_params(backbone_params(self.backbone))
        if self.modality == "text":
            self._load_tokenizer(paths[sp.base], model)
        else:
            self.preprocess = image_preprocess(paths[sp.base], int(getattr(model.config, "image_size", 224)))
        tv = {n: torch.zeros((len(specs), *p.shape), dtype=p.dtype) for n, p in self._theta0.items()}
        heads = {}
        for i, t in enumerate(specs):
            if t.model is not None:
                body, head = self._load_checkpoint(t, paths[t.model])
                self._fill(tv, i, body, t)
            else:
                delta, full, head = self._load_adapter(t, paths[t.adapter])
                self._fill_adapter(tv, i, delta, full, t)
            missing = [n for n in self._head_names if n not in head]
            extra = [n for n in head if n not in self._head_names]
            if missing or extra:
                what = f"{sp.where('model' if t.model else 'adapter', t)}: {t.checkpoint!r}"
                if extra:
                    raise BenchError(f"{what} has head parameter {extra[0]!r}, which {type(model).__name__} has not")
                raise BenchError(f"{what} saves no classification head ({missing[0]!r})"
                                 + (": train the adapter with modules_to_save=[...the head...] (peft's task_type "
                                    "SEQ_CLS does this for score / classifier)" if t.adapter else ""))
            heads[t.name] = tensor_module(head)
            self._sources[t.name]["num_classes"] = _num_classes(head, model)
        self._task_vectors = tv
        self.heads = torch.nn.ModuleDict(heads)

    def _merged_params(self, params: Params) -> Params:
        """θ0: the body's parameters minus those the pool's `exclude:` patterns name."""
        return {n: p for n, p in params.items() if not self._excluded(n)}

    def _excluded(self, name: str) -> bool:
        return any(fnmatch(name, pat) for pat in self.spec.exclude)

    def _load_tokenizer(self, path: Path, model) -> None:
        from transformers import AutoTokenizer

        with quiet_hf():
            try:
                tok = AutoTokenizer.from_pretrained(str(path))
            except (OSError, ValueError) as e:
                raise BenchError(f"{self.spec.where('base')}={self.spec.base!r} has no tokenizer "
                                 f"({' '.join(str(e).split())[:200]})") from None
        if tok.pad_token is None:
            if tok.eos_token is None:
                raise BenchError(f"{self.spec.where('base')}: the tokenizer of {self.spec.base!r} has neither a pad "
                                 f"nor an end-of-text token to pad with")
            tok.pad_token = tok.eos_token          # GPT-2, as FusionBench and gpt2-glue do
        tok.padding_side = "right"
        self.tokenizer = tok
        model.config.pad_token_id = tok.pad_token_id   # sequence classifiers pool the last non-pad token
        cfg = model.config
        limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or self.spec.max_length
        self._max_len = min(self.spec.max_length, int(limit))
        self._pad_id = int(tok.pad_token_id)

    def _load_checkpoint(self, t: TaskSpec, path: Path) -> tuple[Params, Params]:
        from bench.tasks.clip_backends import _check_loading

        what = f"{self.spec.where('model', t)}: fine-tuned model {t.model!r} ({t.name})"
        with quiet_hf():
            try:
                ft, info = self._auto.from_pretrained(str(path), output_loading_info=True)
            except (OSError, ValueError, RuntimeError) as e:
                raise BenchError(f"{what} cannot be loaded as {self._auto.__name__} "
                                 f"({' '.join(str(e).split())[:200]})") from None
        _check_loading(info, what)
        prefix = self._prefix + "."
        body = {n[len(prefix):]: p.detach() for n, p in ft.named_parameters() if n.startswith(prefix)}
        head = {n: p.detach().clone() for n, p in ft.named_parameters() if not n.startswith(prefix)}
        return body, head

    def _fill(self, tv: Params, i: int, params: Params, t: TaskSpec) -> None:
        """τ_i = θ_i − θ0 for a full checkpoint's body `params` (excluded names skipped, the rest checked)."""
        what = f"{self.spec.where('model' if t.model else 'adapter', t)}: task {t.name!r} ({t.checkpoint!r})"
        for n, p in params.items():
            t0 = self._theta0.get(n)
            if t0 is not None and tuple(p.shape) != tuple(t0.shape):
                raise BenchError(self._mismatch(what, n, p.shape, t0.shape))
        kept = {n: p for n, p in params.items() if not self._excluded(n)}
        check_compatible(self._theta0, kept, what)
        for n, t0 in self._theta0.items():
            tv[n][i] = kept[n].to(t0.dtype) - t0

    def _mismatch(self, what: str, name: str, shape, base_shape) -> str:
        return (f"{what}: parameter {name!r} has shape {tuple(shape)}, the base {tuple(base_shape)}; an embedding resized "
                f"for new tokens can be left out of the merge (held at the base's value) by listing it under "
                f"exclude: in {self.spec.path.name}")

    # ---- LoRA adapters -----------------------------------------------------------------------------------------
    def _load_adapter(self, t: TaskSpec, path: Path) -> tuple[Params, Params, Params]:
        """(low-rank updates per body parameter, full body values from modules_to_save, head tensors) of one
        adapter, read from its files: scaling · B A per target module, never a model copy."""
        where = self.spec.where("adapter", t)
        what = f"{where}: adapter {t.adapter!r} ({t.name})"
        cfg = self._sources[t.name]["adapter_config"]
        sd = _adapter_state(Path(path), what)
        body_names = dict(self.backbone.named_parameters())
        lora: dict[str, dict[str, torch.Tensor]] = {}
        full: Params = {}
        head: Params = {}
        for key, value in sd.items():
            k = key.removeprefix("base_model.model.")
            k = re.sub(r"\.modules_to_save\.[^.]+\.", ".", k)
            m = re.fullmatch(r"(.+)\.(lora_A|lora_B)\.(weight|bias)|(.+)\.(lora_embedding_A|lora_embedding_B)", k)
            if m is not None:
                module = m.group(1) or m.group(4)
                part = {"lora_A": "A", "lora_B": "B", "lora_embedding_A": "emb_A",
                        "lora_embedding_B": "emb_B"}[m.group(2) or m.group(5)] + ("_bias" if m.group(3) == "bias" else "")
                lora.setdefault(module, {})[part] = value.float()
                continue
            if "lora_" in k or "trainable_tokens" in k:
                raise BenchError(f"{what} holds {key!r}, a kind of adapter tensor that is not read (only LoRA A/B "
                                 f"and modules_to_save)")
            name = self._body_name(k, body_names)
            if name is not None:
                full[name] = value
            elif self.family == "clip_zeroshot":
                raise BenchError(f"{what} saves {key!r}, outside the vision tower that the pool merges (the zero-shot "
                                 f"heads come from the base's text tower)")
            else:
                head[k] = value.detach().clone().float() if value.is_floating_point() else value
        if not lora and not full:
            raise BenchError(f"{what} holds no LoRA weights")
        alpha_default = float(cfg.get("lora_alpha", 8))
        patterns = dict(cfg.get("alpha_pattern") or {})
        rslora = bool(cfg.get("use_rslora"))
        fan_in_fan_out = bool(cfg.get("fan_in_fan_out"))
        delta: Params = {}
        for module, parts in lora.items():
            mod_name = self._body_name(module + ".weight", body_names)
            if mod_name is None:
                raise BenchError(f"{what} adapts module {module!r}, which is not in the merged "
                                 f"{'vision tower' if self.family == 'clip_zeroshot' else 'body'} of the base")
            mod_name = mod_name[:-len(".weight")]
            A, B = parts.get("A", parts.get("emb_A")), parts.get("B", parts.get("emb_B"))
            if A is None or B is None:
                raise BenchError(f"{what} has lora_A without lora_B (or the reverse) for module {module!r}")
            key = next((p for p in patterns if re.match(rf"(.*\.)?({p})$", module)), None)
            alpha = float(patterns[key]) if key is not None else alpha_default
            r = A.shape[0]
            scaling = alpha / math.sqrt(r) if rslora else alpha / r
            target = self.backbone.get_submodule(mod_name)
            if A.dim() != 2 or B.dim() != 2:
                raise BenchError(f"{what}: module {module!r} is a {type(target).__name__}; LoRA is read for Linear, "
                                 f"Conv1D and Embedding layers only")
            d = (B @ A) * scaling
            if "emb_A" in parts:
                d = d.T                                      # peft's Embedding: transpose(B @ A)
            elif _transposed(target, fan_in_fan_out):
                d = d.T                                      # Conv1D stores [in, out] (fan_in_fan_out)
            delta[mod_name + ".weight"] = d
            if "B_bias" in parts:
                delta[mod_name + ".bias"] = parts["B_bias"] * scaling
        return delta, full, head

    def _body_name(self, name: str, body: dict) -> str | None:
        """`name` (relative to the adapted model) as a name in the merged body, or None when outside it
        (a classifier's head). A classifier's body is under its base-model prefix (`transformer.`);
        a CLIP tower may come as a CLIPModel's `vision_model.` or a bare CLIPVisionModel."""
        if self.family == "clip_zeroshot":
            cands = [name, name.removeprefix("vision_model."), "vision_model." + name]
        else:
            prefix = self._prefix + "."
            cands = [name[len(prefix):]] if name.startswith(prefix) else []
        return next((c for c in cands if c in body), None)

    def _fill_adapter(self, tv: Params, i: int, delta: Params, full: Params, t: TaskSpec) -> None:
        what = f"{self.spec.where('adapter', t)}: task {t.name!r} ({t.adapter!r})"
        for n, v in full.items():              # modules_to_save inside the body: a full value, τ = value − θ0
            t0 = self._theta0.get(n)
            if t0 is None:                     # excluded: held at θ0
                continue
            if tuple(v.shape) != tuple(t0.shape):
                raise BenchError(self._mismatch(what, n, v.shape, t0.shape))
            tv[n][i] = v.to(t0.dtype) - t0
        for n, d in delta.items():
            t0 = self._theta0.get(n)
            if t0 is None:
                continue
            if tuple(d.shape) != tuple(t0.shape):
                raise BenchError(f"{what}: the LoRA update of {n!r} has shape {tuple(d.shape)}, the base parameter "
                                 f"{tuple(t0.shape)}")
            if n in full:
                raise BenchError(f"{what} both saves {n!r} whole and adapts it with LoRA")
            tv[n][i] = d.to(t0.dtype)

    # ---- clip_zeroshot ------------------------------------------------------------------------------------------
    def _build_clip(self, specs: list[TaskSpec], paths: dict[str, Path]) -> None:
        from bench.tasks.clip import CACHE_VERSION as CLIP_CACHE, CLIPSuite, ZeroShotHead, zeroshot_metadata
        from bench.tasks.clip_backends import _check_loading, hf_clip

        sp = self.spec
        loaded = hf_clip(sp.base, paths[sp.base], sp.where("base"))
        self.backbone, self.projection, self._features = loaded.tower, loaded.projection, loaded.features
        self.preprocess = loaded.preprocess
        self._theta0 = self._merged_params(loaded.theta0)
        tv = {n: torch.zeros((len(specs), *p.shape), dtype=p.dtype) for n, p in self._theta0.items()}
        body_names = dict(self.backbone.named_parameters())
        for i, t in enumerate(specs):
            if t.adapter is not None:
                delta, full, _ = self._load_adapter(t, paths[t.adapter])
                self._fill_adapter(tv, i, delta, full, t)
                continue
            from transformers import CLIPModel, CLIPVisionModel

            what = f"{sp.where('model', t)}: fine-tuned model {t.model!r} ({t.name})"
            kind = _config_json(paths[t.model], sp.where("model", t), t.model).get("model_type")
            cls = CLIPVisionModel if kind == "clip_vision_model" else CLIPModel
            with quiet_hf():
                try:
                    ft, info = cls.from_pretrained(str(paths[t.model]), output_loading_info=True)
                except (OSError, ValueError, RuntimeError) as e:
                    raise BenchError(f"{what} cannot be loaded as a {cls.__name__} "
                                     f"({' '.join(str(e).split())[:200]})") from None
            _check_loading(info, what)
            tower = ft if cls is CLIPVisionModel else ft.vision_model
            params = {}
            for n, p in tower.named_parameters():
                name = self._body_name(n, body_names)
                params[name if name is not None else n] = p.detach()
            self._fill(tv, i, params, t)
            del ft, tower, params
        self._task_vectors = tv
        heads = {}
        for t in specs:
            src = self._sources[t.name]
            meta = zeroshot_metadata(t.name) or {}
            classnames = list(t.label_names or meta.get("classnames") or
                              [c.replace("_", " ") for c in (src["class_names"] or [])])
            if not classnames:
                raise BenchError(f"{sp.where('label', t)}: {src['what']}: no class names for the zero-shot head of "
                                 f"{t.name!r}; give label_names: [...] (or use a ClassLabel label column)")
            templates = list(t.templates or sp.templates or meta.get("templates") or DEFAULT_TEMPLATES)
            key = hub.digest({"model": loaded.text_fp, "backbone": "hf", "classnames": classnames,
                              "templates": templates, "version": CLIP_CACHE})   # the published suites' head cache
            directory = cached_build(cache_root() / "clip-heads" / f"{t.name}-{key}",
                                     lambda tmp: CLIPSuite._build_head(tmp, loaded.encode_text, classnames, templates,
                                                                       loaded.logit_scale))
            from safetensors.torch import load_file

            heads[t.name] = ZeroShotHead(load_file(str(directory / "head.safetensors"))["weight"])
            src.update(num_classes=len(classnames), classnames=classnames, templates=templates)
        self.heads = torch.nn.ModuleDict(heads)

    # ---- what methods and the evaluator read ------------------------------------------------------------------
    def features(self, params: Params, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """clip_zeroshot: the projected image features (a classifier's pooling is inside its own forward)."""
        if self.family != "clip_zeroshot":
            raise NotImplementedError("a classifier pool's logits come from the architecture's own forward")
        return self._features(self.backbone, self.projection, params, batch)

    def logits(self, params: Params, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.family == "clip_zeroshot":
            return self.heads[task](self.features(params, batch))
        # the architecture's own forward: merged body + this task's head on one model (no copies)
        merged = {f"{self._prefix}.{k}": v for k, v in params.items()}
        merged.update(dict(self.heads[task].named_parameters()))
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return functional_call(self.model, merged, (), inputs, strict=False).logits

    def prepare(self, batch: dict[str, torch.Tensor], device, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        device = torch.device(device)
        if self.modality == "text":
            out = {k: batch[k].to(device, non_blocking=True).long()
                   for k in ("input_ids", "attention_mask", "token_type_ids", "labels") if k in batch}
            return trim_padding(out)
        dtype = dtype or torch.float32
        mean = torch.tensor(self.preprocess.mean, dtype=dtype, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocess.std, dtype=dtype, device=device).view(1, 3, 1, 1)
        pixels = batch["pixel_values"].to(device, non_blocking=True).to(dtype).div_(255.0)
        return {"pixel_values": (pixels - mean) / std, "labels": batch["labels"].to(device, non_blocking=True).long()}

    def frozen_modules(self) -> list[torch.nn.Module]:
        if self.family == "clip_zeroshot":
            return [self.backbone, self.projection, self.heads]
        return [self.model, self.heads]

    def save_model(self, params: Params, directory: Path) -> dict[str, Any]:
        """ModelSuite's export (clip_zeroshot: bench.tasks.exporting.save_clip, a model that classifies from
        pixels), with the parameters left out by `exclude:` at the base's values."""
        base = {n: p.detach() for n, p in self.backbone.named_parameters()}
        if self.family == "clip_zeroshot":
            from bench.tasks.exporting import save_clip

            return save_clip(self, {**base, **params}, directory,
                             {t: self._sources[t].get("classnames") for t in self.tasks})
        return super().save_model({**base, **params}, directory)

    # ---- data -------------------------------------------------------------------------------------------------
    def split_sizes(self, task: str) -> dict[str, int]:
        src = self._sources[task]
        return {s: (len(idx) if idx is not None else len(src["dd"][name])) for s, (name, idx) in src["splits"].items()}

    def _read_labels(self, task: str, split: str) -> np.ndarray:
        name, idx = self._sources[task]["splits"][split]
        return self._labels(task, self._sources[task]["dd"][name], idx, name)

    def _train_examples(self, task: str, positions: np.ndarray) -> dict[str, torch.Tensor]:
        """Train rows `positions` tokenised or preprocessed now, as `_write_split` stores them."""
        from bench.tasks.clip import clip_images

        src = self._sources[task]
        part = hub.train_rows(src, positions)
        if self.modality == "text":
            arrays = self._encode(task, part)
        else:
            arrays = {"pixel_values": clip_images(part[src["inputs"][0]], self.preprocess, self.preprocess_workers)}
        arrays["labels"] = self.split_labels(task, "train")[positions]
        return {k: torch.from_numpy(v) for k, v in arrays.items()}

    def _split_data(self, task: str, split: str) -> dict[str, torch.Tensor]:
        src = self._sources[task]
        name, idx = self.split_rows(task, split)
        how = ({"tokenizer": self.revisions[self.spec.base], "max_length": self._max_len} if self.modality == "text"
               else {"preprocess": repr(self.preprocess)})
        facts = {"data": src["data_fp"], "split": name, "inputs": list(src["inputs"]), "label": src["label_col"],
                 "label_names": list(self.spec.tasks[task].label_names or []), "sorted": split != "train",
                 "how": how, "version": CACHE_VERSION}
        return hub.stored_split("pool-data", task, split, idx, facts,
                                lambda tmp: self._write_split(tmp, task, name, idx, sort=split != "train"))

    def _encode(self, task: str, rows) -> dict[str, np.ndarray]:
        """Text rows of `task` (a dataset or its columns) tokenised: one form for stored splits and streamed batches."""
        from bench.tasks.gpt2_glue import tokenize

        return tokenize(self.tokenizer, [[str(x) for x in rows[c]] for c in self._sources[task]["inputs"]],
                        self._max_len, self._pad_id, segments=True)

    def _write_split(self, tmp: Path, task: str, split_name: str, idx: np.ndarray | None, sort: bool) -> dict:
        from bench.tasks.clip import write_images

        src = self._sources[task]
        ds = src["dd"][split_name]
        labels = self._labels(task, ds, idx, split_name)
        if self.modality == "text":
            arrays = self._encode(task, ds if idx is None else ds.select(idx.tolist()))
            arrays["labels"] = labels
            if sort:    # shortest first: batches of similar length carry little padding
                order = np.argsort(arrays["attention_mask"].sum(axis=1), kind="stable")
                arrays = {k: v[order] for k, v in arrays.items()}
            hub.save_arrays(tmp, arrays)
        else:
            rows = np.arange(len(ds)) if idx is None else idx
            write_images(tmp, ds, rows, src["inputs"][0], None, self.preprocess, self.preprocess_workers,
                         f"preprocessing {task}/{split_name}")
            hub.save_arrays(tmp, {"labels": labels})
        return {"task": task, "split": split_name, "examples": int(len(labels))}

    # ---- identity -----------------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        sp = self.spec
        tasks = {}
        for t in self.tasks:
            ts, src = sp.tasks[t], self._sources[t]
            tasks[t] = {("model" if ts.model else "adapter"): ts.checkpoint,
                        "data": ts.dataset or {"format": ts.format, "files": ts.data_files or ts.data_dir},
                        "splits": {r: n for r, (n, _) in src["splits"].items()},
                        "inputs": list(src["inputs"]), "label": src["label_col"], "data_fingerprint": src["data_fp"]}
            if src["splits"]["val"][1] is not None:
                tasks[t]["val"] = f"{hub.VAL_FRACTION} of {src['splits']['train'][0]}, seed {hub.VAL_SEED}"
        return {"spec": str(sp.path), "spec_sha256": sp.sha256, "pool": sp.name, "family": sp.family, "base": sp.base,
                "exclude": list(sp.exclude), "max_length": sp.max_length if self.modality == "text" else None,
                "tasks": tasks, "revisions": self.revisions, **self.eval_config()}

    @property
    def key(self) -> str:
        """As every suite's, without the spec's path: the same file content and checkpoints give the same key."""
        cfg = {k: v for k, v in self.config().items() if k != "spec"}
        blob = json.dumps({"name": self.name, "tasks": self.tasks, "version": self.version, "config": cfg},
                          sort_keys=True, default=str)
        return f"{self.name}@{self.version}:{hashlib.sha1(blob.encode()).hexdigest()[:10]}"

    def describe(self) -> str:
        name = self.spec.name or self.spec.path.stem
        return f"pool {name} v{self.version} ({self.family}): {', '.join(self.tasks)}{self.subset_note()}"


# ---- helpers ---------------------------------------------------------------------------------------------------
def tensor_module(tensors: Params) -> torch.nn.Module:
    """A module holding `tensors` under their dotted names (frozen parameters): a task's head, for
    `functional_call` and `state_dict` alike."""
    root = torch.nn.Module()
    for name, t in tensors.items():
        *path, leaf = name.split(".")
        m = root
        for part in path:
            if part not in m._modules:
                m.add_module(part, torch.nn.Module())
            m = m._modules[part]
        m.register_parameter(leaf, torch.nn.Parameter(t.detach().clone(), requires_grad=False))
    return root


def _num_classes(head: Params, model) -> int:
    """Outputs of a head: the first dimension of its last weight (Linear [C, D]) in the model's order."""
    order = [n for n, _ in model.named_parameters() if n in head and n.endswith("weight")]
    return int(head[order[-1]].shape[0])


def _transposed(module: torch.nn.Module, fan_in_fan_out: bool) -> bool:
    """Whether a LoRA update of `module` is stored [in, out]: as peft decides (Conv1D always, Linear never,
    else the adapter's fan_in_fan_out)."""
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, Conv1D):
        return True
    if isinstance(module, torch.nn.Linear):
        return False
    return fan_in_fan_out


def _adapter_state(path: Path, what: str) -> Params:
    st, binf = path / "adapter_model.safetensors", path / "adapter_model.bin"
    try:
        if st.is_file():
            from safetensors.torch import load_file

            return load_file(str(st))
        return torch.load(binf, map_location="cpu", weights_only=True)
    except Exception as e:
        raise BenchError(f"{what}: its weights cannot be read ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None


def _config_json(path: Path, where: str, spec: str) -> dict:
    f = Path(path) / "config.json"
    if not f.is_file():
        raise BenchError(f"{where}={spec!r} has no config.json (not a transformers checkpoint"
                         + ("; an adapter goes under adapter:)" if (Path(path) / "adapter_config.json").is_file() else ")"))
    try:
        return json.loads(f.read_text())
    except ValueError as e:
        raise BenchError(f"{where}: {str(f)!r} is not JSON ({e})") from None


def _arch(cfg: dict) -> str:
    return (cfg.get("architectures") or [cfg.get("model_type") or "model of unknown type"])[0]


def _identity(spec: str) -> str:
    """What a base checkpoint is, to compare an adapter's base with the pool's: a hub id (a snapshot of
    the local hub cache counts as its repository), else the resolved local path."""
    p = Path(spec).expanduser()
    if p.exists():
        p = p.resolve()
        parts = p.parts
        if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
            return parts[-3][len("models--"):].replace("--", "/")
        return str(p)
    return spec.rstrip("/")


def _flat_files(data_files) -> list[str]:
    if isinstance(data_files, dict):
        return [f for v in data_files.values() for f in (v if isinstance(v, list) else [v])]
    return list(data_files) if isinstance(data_files, list) else [data_files]


def image_preprocess(path: Path, image_size: int):
    """Resize, crop, mean and std from a model folder's preprocessor_config.json: `size` with
    `shortest_edge` (short side, then a centre crop of `crop_size`) or height/width (squashed, as
    ViTImageProcessor), `resample` 2 bilinear / 3 bicubic; without the file, ViT's defaults."""
    from bench.tasks.clip_backends import Preprocess

    f = Path(path) / "preprocessor_config.json"
    pp = json.loads(f.read_text()) if f.is_file() else {}
    size = pp.get("size", {"height": image_size, "width": image_size})
    mean = tuple(pp.get("image_mean", (0.5, 0.5, 0.5)))
    std = tuple(pp.get("image_std", (0.5, 0.5, 0.5)))
    interpolation = {2: "bilinear", 3: "bicubic"}.get(pp.get("resample", 2))
    if interpolation is None:
        raise BenchError(f"{str(f)!r}: resample={pp.get('resample')!r} is not supported; valid: 2 (bilinear), 3 (bicubic)")
    if isinstance(size, dict) and "shortest_edge" in size or isinstance(size, int):
        short = int(size["shortest_edge"] if isinstance(size, dict) else size)
        cs = pp.get("crop_size", short) if pp.get("do_center_crop", True) else short
        crop = int(cs.get("height", short) if isinstance(cs, dict) else cs)
        return Preprocess(mean=mean, std=std, resize=short, crop=crop, interpolation=interpolation, resize_mode="shortest")
    h, w = int(size.get("height", image_size)), int(size.get("width", image_size))
    if h != w:
        raise BenchError(f"{str(f)!r}: non-square size {h}x{w} is not supported")
    return Preprocess(mean=mean, std=std, resize=h, crop=h, interpolation=interpolation, resize_mode="squash")
