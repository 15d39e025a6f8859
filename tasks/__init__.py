"""Task suites, one module per family, declared here once as lazy `module:object` references (nothing is
imported until a suite is used; a variant is an entry with its own defaults).

    >>> from bench.core.registry import SUITES
    >>> SUITES.build("toy-quadratic", num_tasks=3).tasks
    ['task0', 'task1', 'task2']
"""
from bench.core.registry import SUITES

S = "bench.tasks"
_CLIP = ("CLIP {}: vision tower fine-tuned on sun397, stanford-cars, resisc45, eurosat, svhn, gtsrb, mnist, dtd "
         "(hub or local; zero-shot heads; weights=random for benchmarks)")
SUITES.declare("toy-quadratic", f"{S}.toy:ToyQuadratic", "analytic quadratic losses, closed-form Pareto front (T = 2..8)")
SUITES.declare("tiny-clip", f"{S}.tiny_clip:TinyClip",
               "tiny CLIPVisionModel (32 px, width 64, 4 layers) on 7 procedural image tasks, built offline")
SUITES.declare("tiny-gpt2", f"{S}.tiny_gpt2:TinyGPT2",
               "tiny GPT2ForSequenceClassification (width 64, 2 layers) on 5 templated text tasks, built offline")
SUITES.declare("clip-vit-b32", f"{S}.clip:CLIPSuite", _CLIP.format("ViT-B/32"), arch="ViT-B-32")
SUITES.declare("clip-vit-b16", f"{S}.clip:CLIPSuite", _CLIP.format("ViT-B/16"), arch="ViT-B-16")
SUITES.declare("clip-vit-l14", f"{S}.clip:CLIPSuite", _CLIP.format("ViT-L/14"), arch="ViT-L-14")
SUITES.declare("gpt2-glue", f"{S}.gpt2_glue:GPT2GLUE", "GPT-2 body fine-tuned on GLUE cola, mnli, mrpc, qnli, qqp, rte, "
               "sst2 (hub or local; per-task score heads; weights=random for benchmarks)")
SUITES.declare("pool", f"{S}.pool:PoolSuite", "declared in YAML (tasks.spec=FILE): base + fine-tuned checkpoints or LoRA adapters")
