# The README's two commands: `make demo` and `make test`. Both create .venv when missing.
# GPU users: `make TORCH="torch==2.6.0" demo` (or any spec) to pick another torch build.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
DEMO := results/demo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: install demo test lint smoke bench clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

demo: install
	$(PY) -m ocr_heads.demo --out $(DEMO)

test: install
	$(PY) -m pytest -q
	$(VENV)/bin/ruff check .

bench: install
	$(PY) bench/capture.py
	$(PY) bench/capture.py --long

# Full-size architecture check (Qwen2-VL-2B shapes, random bf16 weights; ~15 GB RAM, minutes): not in `make test`.
smoke: install
	$(PY) -m pytest -q -m slow tests/test_smoke.py

clean:
	rm -rf $(DEMO) .pytest_cache
