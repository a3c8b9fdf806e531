# Two entry points for newcomers: `make demo` (set up, fetch yolov3-tiny, compile it, run it on a photo, then
# evaluate the digits detector with `snnc eval`)
# and `make test` (set up both environments and run every test). Everything else is a helper target.

PYTHON    ?= python3
PYTHON310 ?= env PYENV_VERSION=3.10.13 python3.10
PYTHON312 ?= env PYENV_VERSION=3.12.1 python3.12
PYTHON313 ?= env PYENV_VERSION=3.13.0 python3.13
VENV      := .venv
VENV310   := .venv310
BUILD     := build
T         ?= 256
BACKEND   ?= numpy

# The Python 3.10 environment (numpy 1.26, networkx 2.8.7: lava-nc's pins) runs the core and backend tests
# again, so the compiler is proven on both, and the Lava backend's tests (lava-nc 0.10.0 needs 3.10).
# torch's local CPU wheel is for 3.11 only.
TESTS310  := tests/test_passes.py tests/test_cli.py tests/test_run.py tests/test_numpy_sim.py tests/test_host.py \
             tests/test_c_backend.py tests/test_lava_backend.py tests/test_signed_lava.py tests/test_graded_lava.py \
             tests/test_countpool_lava.py
# The core (compile, run, eval; NumPy and C backends) on Python 3.12 and 3.13 as well.
# (torch, for the digits trainer's smoke test, has a local CPU wheel for 3.11 only)
TESTS_CORE := tests/test_architecture.py tests/test_passes.py tests/test_cli.py tests/test_host.py tests/test_run.py \
              tests/test_evaluation.py --deselect tests/test_evaluation.py::test_train_script_smoke

.PHONY: demo test setup setup310 setup-core wheel-test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e ".[test,ray,nir-consumer]" torch==2.13.0
	touch $@

$(VENV310)/.installed: pyproject.toml
	$(PYTHON310) -m venv $(VENV310)
	$(VENV310)/bin/python -m pip install -q --upgrade pip
	$(VENV310)/bin/python -m pip install -q "numpy<2" "networkx==2.8.7" -e ".[test,lava]"
	touch $@

.venv31%/.installed: pyproject.toml
	$(PYTHON31$*) -m venv .venv31$*
	.venv31$*/bin/python -m pip install -q --upgrade pip
	.venv31$*/bin/python -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed
setup310: $(VENV310)/.installed
setup-core: .venv312/.installed .venv313/.installed

# The wheel as users install it (not editable), in a fresh venv: compile, inspect, run, eval from it.
wheel-test:
	PYTHON="$(PYTHON)" bash .ci/wheel_smoke.sh

# The demo's second half is `snnc eval` on real labelled data: the digits detector's mAP per T, rates, energy.
demo: $(VENV)/.installed
	$(VENV)/bin/python examples/yolov3_tiny/demo.py --build $(BUILD) -T $(T) --backend $(BACKEND)
	$(VENV)/bin/python examples/digits/evaluate_snn.py --build $(BUILD)/digits

# SNNC_NO_SKIP=1: a skipped test fails (tests/conftest.py); every test must run here and in CI, except the CUDA
# test on a machine without a GPU (its reason is printed by -rs).
test: $(VENV)/.installed $(VENV310)/.installed .venv312/.installed .venv313/.installed
	SNNC_NO_SKIP=1 $(VENV)/bin/python -m pytest -q -rs -n 2 --dist loadfile tests --ignore=tests/test_lava_backend.py \
		--ignore=tests/test_signed_lava.py --ignore=tests/test_countpool_lava.py --ignore=tests/test_graded_lava.py
	SNNC_NO_SKIP=1 $(VENV310)/bin/python -m pytest -q $(TESTS310)
	SNNC_NO_SKIP=1 .venv312/bin/python -m pytest -q $(TESTS_CORE)
	SNNC_NO_SKIP=1 .venv313/bin/python -m pytest -q $(TESTS_CORE)
	PYTHON="$(PYTHON)" bash .ci/wheel_smoke.sh

clean:
	rm -rf $(VENV) $(VENV310) .venv312 .venv313 $(BUILD)
