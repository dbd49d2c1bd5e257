# One-command setup: `make test` and `make demo` build .venv/ from pinned versions first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
LOCK := requirements/lock.txt

.PHONY: venv test test-fast demo lint clean

venv: $(STAMP)

# Install order matters: torch first, then the official sam2 package built against it
# without its CUDA extension (a parity reference for tests), then everything else.
$(STAMP): requirements/pins.txt $(LOCK) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U "pip==26.3"
	$(PIP) install -q -c $(LOCK) torch==2.14.1 torchvision==0.29.1
	SAM2_BUILD_CUDA=0 $(PIP) install -q --no-build-isolation -c $(LOCK) sam2==1.1.0
	$(PIP) install -q -c $(LOCK) -r requirements/pins.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile

# The bundle's inference on its shipped sample. Until the demo weights are shipped
# (bundle/models/model.pt, made by scripts/train_demo_model.py) the same job runs end to end with
# the small SAM 2.1 architecture and random weights, so the masks are not meaningful yet.
demo: $(STAMP)
	@if [ -f bundle/models/model.pt ]; then \
	  $(PY) -m monai.bundle run --config_file bundle/configs/inference.json; \
	else \
	  echo "make demo: no demo weights yet (bundle/models/model.pt); running the pipeline with random sam2.1_hiera_mini weights"; \
	  $(PY) -m monai.bundle run --config_file bundle/configs/inference.json --model sam2.1_hiera_mini --checkpoint none; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check sam2s tests scripts

clean:
	rm -rf $(VENV) build *.egg-info
