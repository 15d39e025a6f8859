# Two commands set everything up on a fresh machine:
#   make run    the default experiment (builds the venv and the offline suite when missing)
#   make test   the test suite (what CI runs)
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.paretobench-installed
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: run test install bench-eval leaderboard gpu-check clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# keep a torch that is already there; else torch and torchvision together, pinned
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PIP) install $(TORCH)
	$(PY) -c "import torch, torchvision; v = lambda m: m.__version__.split('+')[0]; print(f'torch=={v(torch)}\ntorchvision=={v(torchvision)}')" > $(VENV)/constraints.txt
	$(PIP) install -c $(VENV)/constraints.txt -e ".[test,scale]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m bench run

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile

# The leaderboard (issue 17), from nothing: the offline suites built into a fresh cache, every run
# of results/leaderboard/spec.yaml (2 at a time), then results/leaderboard/leaderboard.{md,tex,csv}
# and the web page with its figures (results/leaderboard/html). About 60 min on 2 idle cores.
LEADERBOARD       ?= results/leaderboard
LEADERBOARD_RUNS  ?= results/runs/leaderboard
LEADERBOARD_CACHE ?= results/runs/leaderboard-suites

leaderboard: $(STAMP)
	rm -rf $(LEADERBOARD_RUNS) $(LEADERBOARD_CACHE) $(LEADERBOARD)/html $(LEADERBOARD)/figures
	PARETOBENCH_CACHE=$(LEADERBOARD_CACHE) $(PY) -m bench.reports.leaderboard $(LEADERBOARD)/spec.yaml \
	    runs=$(LEADERBOARD_RUNS) out=$(LEADERBOARD)

# On a machine with a CUDA GPU: benchmarks/speed.py at the published sizes, then every built-in method on
# clip-vit-b32/b16/l14 (2 and 8 tasks) and gpt2-glue (2 and 7) with random weights, a few steps each;
# every figure of README "Performance" in results/gpu-check.json, the runs' records under
# results/runs/gpu-check. About 8 min on one H100 (estimated; benchmarks/gpu_check.py says how).
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py --device cuda --size full --out results/gpu-check.json

clean:
	rm -rf $(VENV) .pytest_cache

# Peak memory of building clip-vit-b32 / -l14 (weights=random, T = 2 and 8) and of one training step (one
# evaluation batch for ta_grid, map) of every method: benchmarks/memory.py, each measurement a fresh
# subprocess; the JSON in benchmarks/results/. About 60 min on 2 busy cores; MEMORY_DEVICE=cuda on a GPU.
MEMORY_DEVICE ?= cpu
.PHONY: bench-memory
bench-memory: $(STAMP)
	$(PY) benchmarks/memory.py --device $(MEMORY_DEVICE) --json benchmarks/results/memory-$(MEMORY_DEVICE).json
