# Two entry points: `make demo` (pre-train + evaluate on a generated corpus, CPU)
# and `make test` (the full test suite). Both create .venv when it is missing.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
OUT ?= results/demo

.PHONY: venv demo test lint clean real-audio

$(VENV)/.installed: setup.py
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e ".[dev,plots]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VPY) recipes/demo/run_demo.py --output_folder=$(OUT)

test: venv
	OMP_NUM_THREADS=2 $(VPY) -m pytest -q
	$(VENV)/bin/ruff check .

# Real recordings from Debian packages and TTS (as root on a fresh machine: add ARGS=--apt)
real-audio: venv
	$(VPY) benchmarks/real_audio/run.py --build $(ARGS)

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf results
