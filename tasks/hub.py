"""Loading helpers shared by the published suites: a hub id or a local directory, offline
detection with one-line errors, dataset splits and compact on-disk arrays.

    python -m bench run method=ta_grid tasks=clip-vit-b32 tasks.pretrained=/data/clip-b32 \\
        'tasks.finetuned=/data/ft/clip-b32_{task}' tasks.datasets.mnist=/data/mnist

Every id in a suite's config (model or dataset) may be a local directory instead: a
`save_pretrained` / `save_to_disk` folder or a downloaded repository. Hub ids are looked up in the
local Hugging Face cache first (a cached copy is used as is; `hf download` again to update it).
When one is missing and the hub is reachable it is downloaded (configs, tokenizers and safetensors
weights only, never TF/Flax/ONNX copies; of a dataset only the files of the splits a suite uses, in
the hub's layout `<folder>/<split>-NNNNN-of-NNNNN.parquet`, never e.g. the corrupted test copies
some repositories also hold). When offline (`HF_HUB_OFFLINE=1`) or unreachable, `resolve` raises
one `BenchError` that names every missing id and the commands that fetch exactly those files ahead,
before anything is loaded or written. Dataset ids take an optional `:config` suffix, the folder of
their files (`ufldl-stanford/svhn:cropped_digits`, `nyu-mll/glue:mnli`).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from bench.api import BenchError
from bench.tasks.models import quiet_hf

MODEL_FILES = ("*.json", "*.txt", "*.model", "*.safetensors")   # configs, tokenizers, weights
MODEL_FILES_BIN = ("*.json", "*.txt", "*.model", "pytorch_model*.bin")   # repos without safetensors
WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.pt", "*.pth")
VAL_FRACTION = 0.1      # validation = this share of train, drawn with VAL_SEED, when a dataset has none
VAL_SEED = 0


@dataclass(frozen=True)
class Ref:
    """One thing to fetch: `spec` as configured (a hub id or a local path; datasets may end in
    `:config`), `what` says where it was configured (for messages)."""

    spec: str
    what: str
    repo_type: str = "model"                # "model" | "dataset"
    include: tuple[str, ...] | None = None  # file patterns to fetch (None: the defaults for the type)
    splits: tuple[str, ...] = ("train", "test")   # datasets: the splits fetched and loaded; each must exist
    optional: tuple[str, ...] = ("validation",)   # datasets: fetched and loaded where the dataset has them

    @property
    def id(self) -> str:
        return split_config(self.spec)[0] if self.repo_type == "dataset" else self.spec

    @property
    def config(self) -> str | None:
        return split_config(self.spec)[1] if self.repo_type == "dataset" else None

    def patterns(self) -> list[str]:
        if self.include is not None:
            return list(self.include)
        if self.repo_type == "model":
            return list(MODEL_FILES)
        return [*(self.split_pattern(s) for s in (*self.splits, *self.optional)), "README.md"]

    def split_pattern(self, split: str) -> str:
        """The files of one split in the hub's layout: `<config folder, or any>/<split>-*`."""
        return f"{self.config or '*'}/{split}-*"


def split_config(spec: str) -> tuple[str, str | None]:
    """'org/name:config' → ('org/name', 'config'); a trailing part containing '/' is not a config."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail and "/" not in tail:
        return head, tail
    return spec, None


def hf_cli() -> str:
    """The hub's command-line client: `hf` since huggingface_hub 0.34, `huggingface-cli` before."""
    import huggingface_hub

    major, minor = (int(x) for x in huggingface_hub.__version__.split(".")[:2])
    return "hf" if (major, minor) >= (0, 34) else "huggingface-cli"


def offline() -> bool:
    """HF_HUB_OFFLINE as set now (the hub library reads it only once, at import)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE")
    if env is not None:
        return env.strip().lower() in ("1", "true", "yes", "on")
    return bool(constants.HF_HUB_OFFLINE)


def local_path(spec: str) -> Path | None:
    """The local directory or file `spec` names, or None when it is a hub id."""
    p = Path(spec).expanduser()
    if p.exists() or spec.startswith(("/", "./", "../", "~", ".\\")) or os.path.isabs(spec):
        return p
    return None


def fetch_command(refs: Sequence[Ref]) -> str:
    """Shell commands (one line) that put `refs` in the local Hugging Face cache: for datasets only
    the files of their splits (one command per repository, its configs' folders together)."""
    cli, parts = hf_cli(), []
    models = [r.id for r in refs if r.repo_type == "model" and r.include is None]
    if models:
        parts.append(_download_each(cli, "m", models, include_args(cli, MODEL_FILES)))
    for r in refs:
        if r.repo_type == "model" and r.include is not None:
            parts.append(f"{cli} download {r.id} {include_args(cli, r.include)}")
    by_repo: dict[str, list[str]] = {}
    for r in refs:
        if r.repo_type == "dataset":
            by_repo.setdefault(r.id, [])
            by_repo[r.id] += [p for p in r.patterns() if p not in by_repo[r.id]]
    by_patterns: dict[tuple[str, ...], list[str]] = {}     # repositories fetched alike share one loop
    for repo, pats in by_repo.items():
        by_patterns.setdefault(tuple(pats), []).append(repo)
    for pats, repos in by_patterns.items():
        parts.append(_download_each(cli, "d", repos, f"--repo-type dataset {include_args(cli, pats)}"))
    return "; ".join(parts)


def _download_each(cli: str, var: str, ids: Sequence[str], args: str) -> str:
    if len(ids) == 1:
        return f"{cli} download {ids[0]} {args}"
    return f"for {var} in {' '.join(ids)}; do {cli} download ${var} {args}; done"


def include_args(cli: str, patterns: Sequence[str]) -> str:
    """`hf` repeats the flag per pattern; the older `huggingface-cli` takes them after one flag."""
    if cli == "hf":
        return " ".join(f"--include '{p}'" for p in patterns)
    return "--include " + " ".join(f"'{p}'" for p in patterns)


def resolve(refs: Iterable[Ref]) -> dict[str, Path]:
    """{spec: local path} for every ref, downloading what is missing when the hub is reachable.
    Raises one BenchError naming every id that cannot be had (offline or unreachable)."""
    from huggingface_hub.errors import (GatedRepoError, HFValidationError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError)
    from huggingface_hub.utils import validate_repo_id

    out: dict[str, Path] = {}
    missing: list[Ref] = []
    for ref in dict.fromkeys(refs):          # unique, in order
        if ref.spec in out:
            continue
        p = local_path(ref.id)
        if p is not None:
            if not p.exists():
                raise BenchError(f"{ref.what}={ref.spec!r}: no such file or directory "
                                 f"(expected a hub id or an existing local path)")
            out[ref.spec] = p
            continue
        try:
            validate_repo_id(ref.id)
        except HFValidationError:
            raise BenchError(f"{ref.what}={ref.spec!r} is neither an existing local path nor a valid hub id") from None
        path = _cached(ref)
        if path is None and not offline():
            try:
                path = _download(ref)
            except GatedRepoError:             # (a RepositoryNotFoundError: first)
                raise BenchError(f"{ref.what}={ref.spec!r} is gated on the hub: accept its terms and set HF_TOKEN") from None
            except RepositoryNotFoundError:
                raise BenchError(f"{ref.what}={ref.spec!r}: no such {ref.repo_type} repository on the hub "
                                 f"(or it is private; set HF_TOKEN)") from None
            except (LocalEntryNotFoundError, OSError, ConnectionError):   # unreachable
                path = None
            except Exception as e:   # the hub client's HTTP errors (httpx/requests) when unreachable
                if "connect" not in type(e).__name__.lower() and "timeout" not in type(e).__name__.lower():
                    raise
                path = None
        if path is None:
            missing.append(ref)
        else:
            out[ref.spec] = path
    if missing:
        why = "HF_HUB_OFFLINE is set" if offline() else "the hub is unreachable"
        names = ", ".join(("dataset " if r.repo_type == "dataset" else "") + r.spec for r in missing)
        raise BenchError(f"not in the local Hugging Face cache and {why}: {names}; fetch them ahead on a machine "
                         f"with hub access: {fetch_command(missing)} (or point the suite's ids at local directories)")
    return out


def _cache_dir() -> str | None:
    return os.environ.get("HF_HUB_CACHE") or None


def _cached(ref: Ref) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(ref.id, repo_type=ref.repo_type, local_files_only=True,
                                      allow_patterns=ref.patterns(), cache_dir=_cache_dir()))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    return path if _complete(path, ref) else None


def _download(ref: Ref) -> Path | None:
    from huggingface_hub import snapshot_download

    path = Path(snapshot_download(ref.id, repo_type=ref.repo_type, allow_patterns=ref.patterns(),
                                  cache_dir=_cache_dir()))
    if not _complete(path, ref) and ref.repo_type == "model" and ref.include is None:
        path = Path(snapshot_download(ref.id, repo_type="model", allow_patterns=list(MODEL_FILES_BIN),
                                      cache_dir=_cache_dir()))
    return path if _complete(path, ref) else None


def _complete(path: Path, ref: Ref) -> bool:
    """A snapshot folder holds what loading needs (the cache may hold only part of a repository)."""
    if ref.repo_type == "dataset":
        return all(s in split_files(path, ref) for s in ref.splits)
    return any(next(path.rglob(g), None) is not None for g in WEIGHT_GLOBS)


def fingerprint(path: Path) -> str:
    """Identifies the content of a resolved path for cache keys: the commit of a hub snapshot,
    else a hash of every file's relative path, size and modification time."""
    path = Path(path)
    if path.parent.name == "snapshots":
        return f"{path.parent.parent.name}@{path.name}"
    h = hashlib.sha1()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(path) if p != path else p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---- datasets --------------------------------------------------------------------------------
def split_files(path: Path, ref: Ref) -> dict[str, str]:
    """{split: data files pattern} of the splits of `ref` that a dataset folder in the hub's layout
    holds; a split found in several folders needs the id's `:config` to pick one."""
    path = Path(path)
    files = [p.relative_to(path).as_posix() for p in path.rglob("*")
             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)]
    out = {}
    for split in (*ref.splits, *ref.optional):
        folders = sorted({f.rsplit("/", 1)[0] for f in files if fnmatch(f, ref.split_pattern(split))})
        if len(folders) > 1:
            raise BenchError(f"{ref.what}={ref.spec!r} holds split {split!r} in several folders "
                             f"({', '.join(folders)}); name one as the config, e.g. {ref.id}:{folders[0]}")
        if folders:   # a pattern, not a file list: datasets orders the shards as it always does
            out[split] = f"{folders[0]}/{split}-*"
    return out


def load_dataset_dict(path: Path, ref: Ref):
    """A `datasets.DatasetDict` from a `save_to_disk` folder, or of only `ref`'s splits from a dataset
    repository in the hub's layout (downloaded or local): no other split is read or converted."""
    import datasets

    path, what, config = Path(path), ref.what, ref.config
    with quiet_hf():
        try:
            if (path / "dataset_dict.json").exists():
                dd = datasets.load_from_disk(str(path))
            elif (path / "state.json").exists():
                raise BenchError(f"{what}={str(path)!r} holds a single split; save a DatasetDict with train and test")
            else:
                files = split_files(path, ref)
                if all(s in files for s in ref.splits):
                    dd = datasets.load_dataset(str(path), data_files=files, features=_card_features(path, config))
                else:   # another layout (csv, image folders, ...): the builder finds the splits itself
                    dd = datasets.load_dataset(str(path), config)
        except BenchError:
            raise
        except (ValueError, FileNotFoundError, OSError) as e:
            raise BenchError(f"{what}={str(path)!r}{':' + config if config else ''} cannot be read as a dataset "
                             f"({' '.join(str(e).split())[:300]})") from None
    if not isinstance(dd, datasets.DatasetDict):
        raise BenchError(f"{what}={str(path)!r} holds a single split; save a DatasetDict with train and test")
    return dd


def _card_features(path: Path, config: str | None):
    """The features the dataset card (README.md) declares for `config`, or None. Loading named data
    files bypasses the card, and with it the class names of files that do not carry their own."""
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCard

    readme = path / "README.md"
    if not readme.is_file():
        return None
    info = DatasetInfosDict.from_dataset_card_data(DatasetCard.load(readme).data).get(config or "default")
    return info.features if info is not None else None


def rows_of(ds, rows: np.ndarray) -> dict[str, list]:
    """Rows `rows` of a datasets split (repeats allowed), as {column: values}: only those rows are decoded."""
    return ds[[int(i) for i in rows]]


def train_rows(src: dict, positions: np.ndarray) -> dict[str, list]:
    """Rows `positions` of a suite's train split (`src`: "dd", "splits" {split: (name, rows or None)})."""
    name, idx = src["splits"]["train"]
    return rows_of(src["dd"][name], positions if idx is None else idx[positions])


def read_labels(src: dict, split: str, what: str, hint: str = "") -> np.ndarray:
    """Labels of a suite's `split` in order, from its label column alone (`src` as above, with "label_col"
    and "num_classes"); a label outside 0..C−1 is one line naming `what` and the split."""
    name, idx = src["splits"][split]
    labels = np.asarray(src["dd"][name][src["label_col"]], dtype=np.int64)
    labels = labels if idx is None else labels[idx]
    if labels.size and (labels.min() < 0 or labels.max() >= src["num_classes"]):
        raise BenchError(f"{what} split {name!r} has labels outside 0..{src['num_classes'] - 1}{hint}")
    return labels


def pick(columns: Sequence[str], choices: Sequence[str], what: str, kind: str) -> str:
    for c in choices:
        if c in columns:
            return c
    raise BenchError(f"{what} has no {kind} column ({' or '.join(choices)}); its columns: {', '.join(columns)}")


def carve(n: int, fraction: float = VAL_FRACTION, seed: int = VAL_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Split range(n) into (train, val) index arrays, val = round(fraction·n) ≥ 1 rows drawn with a
    fixed seed (numpy PCG64: the same on every machine). Both sorted."""
    if n < 2:
        raise BenchError(f"a train split of {n} example(s) cannot give up a validation split")
    n_val = min(n - 1, max(1, int(round(fraction * n))))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def splits(dd, test_split: str, what: str) -> dict[str, tuple[str, np.ndarray | None]]:
    """{"train"|"val"|"test": (dataset split, row indices or None for all)}: test = `test_split`,
    val = the dataset's validation split when it has one, else carved from train."""
    names = list(dd.keys())
    if test_split not in names:
        raise BenchError(f"{what} has no {test_split!r} split; its splits: {', '.join(names)}")
    if "train" not in names:
        raise BenchError(f"{what} has no 'train' split; its splits: {', '.join(names)}")
    val = next((s for s in ("validation", "val", "valid") if s in names and s != test_split), None)
    if val is not None:
        return {"train": ("train", None), "val": (val, None), "test": (test_split, None)}
    tr, va = carve(len(dd["train"]))
    return {"train": ("train", tr), "val": ("train", va), "test": (test_split, None)}


# ---- compact arrays on disk -------------------------------------------------------------------
def stored_split(folder: str, task: str, split: str, rows: np.ndarray | None, facts: dict,
                 write: Callable[[Path], dict]) -> dict[str, torch.Tensor]:
    """A suite's `split` of `task` as stored arrays (`load_arrays`), built once by `write(tmp)` under
    `$PARETOBENCH_CACHE/<folder>/`, keyed by `facts` (data, split name, preprocessing, version) and the
    dataset rows it holds (`rows`, None: all)."""
    from bench.tasks.cache import cache_root, cached_build

    key = digest({**facts, "rows": None if rows is None else digest(rows.tolist())})
    return load_arrays(cached_build(cache_root() / folder / f"{task}-{split}-{key}", write))


def save_arrays(directory: Path, arrays: dict[str, np.ndarray]) -> None:
    for k, v in arrays.items():
        np.save(Path(directory) / f"{k}.npy", v)


def load_arrays(directory: Path) -> dict[str, torch.Tensor]:
    """Memory-mapped (copy-on-write) tensors: pages are read on use, never the whole file at once."""
    return {p.stem: torch.from_numpy(np.load(p, mmap_mode="c")) for p in sorted(Path(directory).glob("*.npy"))}


def split_sizes(suite, task: str, published: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Examples per split of a published suite: its data's sizes; with random weights, the published
    (train, test) sizes with val carved from train, or `synthetic_size` for each split."""
    if suite.random_weights:
        if suite.synthetic_size is not None:
            return {s: suite.synthetic_size for s in ("train", "val", "test")}
        n_train, n_test = published[task]
        n_val = int(round(VAL_FRACTION * n_train))
        return {"train": n_train - n_val, "val": n_val, "test": n_test}
    src = suite._sources[task]
    return {s: (len(idx) if idx is not None else len(src["dd"][name])) for s, (name, idx) in src["splits"].items()}
