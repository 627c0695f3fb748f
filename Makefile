# Two commands on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup web review demo test benchmark clean check-py39 test-slicer512 check-wheel

$(STAMP): pyproject.toml setup.py requirements.txt
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
	$(VENV)/bin/spineanalysis analyze Resources/Samples/MyoSegmenTUM_VB3_02_image.nii.gz -o out/demo --overwrite
	@echo "open out/demo/report.png; measurements in out/demo/measurements.csv"

test: $(STAMP) $(WEB_STAMP) check-py39 test-slicer512 check-wheel
	$(PY) -m pytest -q Testing/Python
	# the review page end to end in headless Chromium, in the web environment (trame-slicer)
	VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow $(WEB_PY) -m pytest -q Testing/Python/test_web_scene.py Testing/Python/test_web_e2e.py

# --- Supported Slicer versions (issue #26) -------------------------------------------------------------
# Slicer 5.8 runs Python 3.9: every .py file must compile there and the library parts the module imports must
# import and measure (a small venv with numpy + SimpleITK only). Python 3.9 comes from pyenv (`pyenv root`).
PYENV_ROOT ?= $(or $(shell pyenv root 2>/dev/null),$(HOME)/.pyenv)
PY39 ?= $(firstword $(wildcard $(PYENV_ROOT)/versions/3.9*/bin/python3.9) $(shell command -v python3.9 2>/dev/null))
VENV39 := .venv-py39
$(VENV39)/.installed:
	@test -n "$(PY39)" || { echo "check-py39: no Python 3.9 found (pyenv install 3.9)"; exit 1; }
	$(PY39) -m venv $(VENV39)
	$(VENV39)/bin/python -m pip install --quiet "numpy<2.1" "SimpleITK>=2.3"
	touch $@
check-py39: $(VENV39)/.installed
	$(VENV39)/bin/python Testing/Compat/check_python39.py

# The module's self-test and the defect regressions on slicer-core 5.12.4.0 (Slicer 5.12, Python 3.12), in a venv
# of its own without torch (the self-test reports its model part as skipped there, as in a fresh Slicer).
PY312 ?= $(firstword $(wildcard $(PYENV_ROOT)/versions/3.12*/bin/python3.12) $(shell command -v python3.12 2>/dev/null))
VENV512 := .venv-slicer512
$(VENV512)/.installed:
	@test -n "$(PY312)" || { echo "test-slicer512: no Python 3.12 found (pyenv install 3.12)"; exit 1; }
	$(PY312) -m venv $(VENV512)
	$(VENV512)/bin/python -m pip install --quiet "numpy<3" "SimpleITK>=2.3" "slicer-core==5.12.4.0" "pytest>=8"
	touch $@
test-slicer512: $(VENV512)/.installed
	$(VENV512)/bin/python -m pytest -q -p no:cacheprovider Testing/Python/test_slicer_module.py Testing/Python/test_slicer_defects.py Testing/Python/test_slicer_workflow.py Testing/Python/test_slicer_rerun.py Testing/Python/test_slicer_landmarks.py

# The wheel a user installs: built from this tree, installed into a clean venv (dependencies reused from .venv,
# nothing downloaded), run from a temporary folder without the source tree: the model and the sample must come
# from inside the package and `spineanalysis analyze` must work on the sample (about 30 s).
check-wheel: $(STAMP)
	$(PY) Testing/Packaging/check_wheel.py

benchmark: $(STAMP)
	$(PY) Testing/Benchmarks/benchmark_measure.py
	$(PY) Testing/Benchmarks/benchmark_segment.py
	$(PY) Testing/Benchmarks/benchmark_batch.py --cases 12

review: $(WEB_STAMP)
	VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow $(WEB_PY) -m SpineAnalysisLib.web Resources/Samples/MyoSegmenTUM_VB3_02_image.nii.gz

clean:
	rm -rf out .pytest_cache
