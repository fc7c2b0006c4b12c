# Two commands a fresh machine needs: `make test` and `make demo` (Python 3 and make only).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help test test-fast demo bench clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	$(PY) -m bfcnn.demo --output-directory demo_output

# `make bench`: inference speed of the zoo's five models (their pipelines, untrained weights: speed does
# not depend on them), Keras graph against TFLite fp32 (whole image and tiles of 256) and fp16 on a
# 512 x 512 image, median of 3 runs. Override BENCH_CONFIGS / BENCH_ARGS for more, e.g. every pipeline
# with int8 too: make bench BENCH_CONFIGS="pipelines/*.yaml" BENCH_ARGS="--quantize none fp16 int8 --runs 7"
ZOO_PIPELINES := pipelines/n3net_gray.yaml pipelines/pyramid_color_m.yaml pipelines/pyramid_gray_m.yaml \
	pipelines/resnet_color_s.yaml pipelines/resnet_gray_s.yaml
BENCH_CONFIGS ?= $(ZOO_PIPELINES)
BENCH_ARGS ?= --size 512 --runs 3 --quantize none fp16

help:
	@echo "make test       the whole test suite (CI runs exactly this)"
	@echo "make test-fast  the tests not marked slow"
	@echo "make demo       denoise scikit-image's photographs with the zoo's default models into demo_output/"
	@echo "make bench      inference speed of the zoo's five models' pipelines ($(notdir $(BENCH_CONFIGS))):"
	@echo "                Keras against TFLite ($(BENCH_ARGS)); BENCH_CONFIGS and BENCH_ARGS override"
	@echo "make clean      remove the virtual environment, build files and demo_output/"

bench: $(STAMP)
	$(PY) benchmarks/bench_inference.py --configs $(BENCH_CONFIGS) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info demo_output
