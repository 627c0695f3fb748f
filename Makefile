# Two commands on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test benchmark clean

$(STAMP): pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch pinned: 2.13.0 is a CPU build here; an unpinned torch pulls a multi-GB CUDA build
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/spineanalysis analyze Resources/Samples/MyoSegmenTUM_VB3_02_image.nii.gz -o out/demo
	@echo "open out/demo/report.png; measurements in out/demo/measurements.csv"

test: $(STAMP)
	$(PY) -m pytest -q Testing/Python

benchmark: $(STAMP)
	$(PY) Testing/Benchmarks/benchmark_measure.py
	$(PY) Testing/Benchmarks/benchmark_segment.py
	$(PY) Testing/Benchmarks/benchmark_batch.py --cases 12

clean:
	rm -rf out .pytest_cache
