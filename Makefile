# Two commands on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup web review demo test benchmark clean

$(STAMP): pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch pinned: 2.13.0 is a CPU build here; an unpinned torch pulls a multi-GB CUDA build
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# Browser review page (spineanalysis review): trame-slicer 2.0.0 pins slicer-core 5.11.0.* (through
# slicer-layer-dm) while the test suite pins 5.13, so the web app gets its own environment.
WEB_VENV := .venv-web
WEB_PY := $(WEB_VENV)/bin/python
WEB_STAMP := $(WEB_VENV)/.installed

$(WEB_STAMP): requirements-web.txt
	$(PYTHON) -m venv $(WEB_VENV)
	$(WEB_PY) -m pip install --quiet --upgrade pip
	# torch first and pinned, so the local CPU build is taken (not a multi-GB CUDA build)
	$(WEB_PY) -m pip install --quiet torch==2.13.0
	$(WEB_PY) -m pip install --quiet -r requirements-web.txt
	$(WEB_PY) -m pip install --quiet --no-deps -e .
	touch $(WEB_STAMP)

web: $(WEB_STAMP)

demo: $(STAMP)
	$(VENV)/bin/spineanalysis analyze Resources/Samples/MyoSegmenTUM_VB3_02_image.nii.gz -o out/demo
	@echo "open out/demo/report.png; measurements in out/demo/measurements.csv"

test: $(STAMP) $(WEB_STAMP)
	$(PY) -m pytest -q Testing/Python
	# the review page end to end in headless Chromium, in the web environment (trame-slicer)
	VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow $(WEB_PY) -m pytest -q Testing/Python/test_web_e2e.py

benchmark: $(STAMP)
	$(PY) Testing/Benchmarks/benchmark_measure.py
	$(PY) Testing/Benchmarks/benchmark_segment.py
	$(PY) Testing/Benchmarks/benchmark_batch.py --cases 12

review: $(WEB_STAMP)
	VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow $(WEB_PY) -m SpineAnalysisLib.web Resources/Samples/MyoSegmenTUM_VB3_02_image.nii.gz

clean:
	rm -rf out .pytest_cache
