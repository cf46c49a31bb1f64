# Every target creates .venv when it is missing: torch first (TORCH, a pinned release), then dpokd.
# Which build of torch that is depends on the index pip reads. TORCH_INDEX empty (the default) is
# pip's own: from PyPI, torch for Linux is the CUDA build, several GB with its nvidia-* packages.
# For the CPU build (a few hundred MB), name PyTorch's CPU index:
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: demo test bench docs methods clean

$(BIN)/dpokd: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)$(if $(TORCH_INDEX), --index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: $(BIN)/dpokd
	$(BIN)/dpokd run specs/quickstart.toml
	@echo
	@echo "Next: the table again, and the HTML report in a browser:"
	@echo "  $(BIN)/dpokd leaderboard runs/quickstart"
	@echo "  $(BIN)/dpokd view runs/quickstart --open"
	@echo "(or 'source $(BIN)/activate' once, then plain 'dpokd ...')"

test: $(BIN)/dpokd
	$(BIN)/python -m pytest -q -n auto --dist loadfile

# Every output the README and the docs show, from real runs (the quickstart's and the two ablations'
# seeds 0, 1 and 2: each run once, then resumed as finished), then the report's screenshot, the runs'
# results the drift test reads (tests/fixtures/seed_runs) and the site.
docs: $(BIN)/dpokd
	for spec in quickstart ablation_loss ablation_sft; do \
	  $(BIN)/dpokd run specs/$$spec.toml && $(BIN)/dpokd run specs/$$spec.toml --seed 1 && \
	  $(BIN)/dpokd run specs/$$spec.toml --seed 2 || exit 1; done
	$(BIN)/cog -r -I docs README.md docs/*.md
	$(BIN)/python docs/outputs.py
	$(BIN)/mkdocs build --strict

# The methods table: every spec in specs/methods/ over SEEDS seeds (runs into runs/), summarised into
# docs/methods.json, then the table in docs/methods.md and in the README (its own cog markers, so that
# it needs no other run) regenerated from it.
SEEDS ?= 5
METHODS_MARKERS := --markers "[[[methods methods]]] [[[end-methods]]]"
methods: $(BIN)/dpokd
	$(BIN)/python docs/methods.py --seeds $(SEEDS)
	$(BIN)/cog -r -I docs docs/methods.md
	$(BIN)/cog -r -I docs $(METHODS_MARKERS) README.md

bench: $(BIN)/dpokd
	@for b in bench/*.py; do case $$b in */_*) continue;; esac; echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs build site *.egg-info
