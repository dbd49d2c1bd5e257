# One-command setup: `make test` and `make demo` build .venv/ from pinned versions first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
LOCK := requirements/lock.txt

.PHONY: venv test demo lint clean

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

# The bundle's inference on its shipped sample with the shipped demo model (bundle/models/model.pt).
demo: $(STAMP)
	$(PY) -m monai.bundle run --config_file bundle/configs/inference.json

lint: $(STAMP)
	$(VENV)/bin/ruff check sam2s tests scripts

clean:
	rm -rf $(VENV) build *.egg-info
