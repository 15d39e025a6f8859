# Two commands set everything up on a fresh machine:
#   make run    the default experiment (builds the venv and the offline suite when missing)
#   make test   the test suite (what CI runs)
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.paretobench-installed
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: run test install bench-eval leaderboard clean

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

# The README's leaderboard: every baseline config (results/baselines/*.json) × seeds, run into a
# fresh results root, then the tables (md, tex, csv) and figures (PNG, PDF) into results/leaderboard/.
LEADERBOARD       ?= results/leaderboard
LEADERBOARD_RUNS  ?= results/runs/leaderboard
LEADERBOARD_SEEDS ?= [0,1,2]

leaderboard: $(STAMP)
	rm -rf $(LEADERBOARD_RUNS) $(LEADERBOARD)/figures
	mkdir -p $(LEADERBOARD)
	$(PY) -m bench check into=$(LEADERBOARD_RUNS) 'seeds=$(LEADERBOARD_SEEDS)'
	$(PY) -m bench table out=$(LEADERBOARD_RUNS) format=md    > $(LEADERBOARD)/leaderboard.md
	$(PY) -m bench table out=$(LEADERBOARD_RUNS) format=latex > $(LEADERBOARD)/leaderboard.tex
	$(PY) -m bench table out=$(LEADERBOARD_RUNS) format=csv   > $(LEADERBOARD)/leaderboard.csv
	$(PY) -m bench plot  out=$(LEADERBOARD_RUNS) figures=$(LEADERBOARD)/figures

clean:
	rm -rf $(VENV) .pytest_cache
