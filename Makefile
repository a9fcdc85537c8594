# Quick start: `make demo` and `make test`. Both do all the set-up themselves on a fresh machine.
SHELL := /bin/bash
PY := .venv/bin/python
PIP := .venv/bin/pip
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := chromium openssh-server openssh-client prometheus-pushgateway shellcheck mmdebstrap umoci runc iproute2
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup venv system-packages npm-packages lab-binaries linters venv-helm demo test lint unit lab-up lab-down bench gpu-host-check

setup: venv system-packages npm-packages lab-binaries linters venv-helm

venv: .venv/.installed
.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $@

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; fi

npm-packages: node_modules/.installed
node_modules/.installed: package.json
	@if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
	touch $@

lab-binaries: venv
	$(PY) -m lab build

# actionlint for the CI templates (docs/nightly.md), cached next to the lab binaries
linters: venv
	$(PY) -m lab.linters

# The suite needs helm 3.19+ on PATH (also for a read-only audit): the lab's helm, linked into the virtualenv,
# so `pytest features/` works in an activated .venv right after `make demo`. A helm of your own is not replaced.
venv-helm: lab-binaries
	@helm="$$($(PY) -c 'from lab.versions import bin_dir; print(bin_dir() / "helm")')"; \
	if [ -e .venv/bin/helm ] && [ ! -L .venv/bin/helm ]; then echo ".venv/bin/helm exists, left as it is"; \
	else ln -sfn "$$helm" .venv/bin/helm && echo ".venv/bin/helm -> $$helm"; fi

lab-up: setup
	$(PY) -m lab up

lab-down: venv
	$(PY) -m lab down

demo: setup
	$(PY) -m lab up
	$(PY) -m lab.demo

lint: venv
	$(PY) -m ruff check .

unit: venv
	$(PY) -m pytest tests/unit -q

test: setup lint
	$(PY) -m pytest tests -q -p no:randomly

# Host-level checks on a GPU machine without Kubernetes (local backend): docs/real-gpu.md
gpu-host-check: venv
	$(PY) -m pytest features/ --host-only --host-backend local -q

bench: setup
	$(PY) -m bench.run $(if $(NODES),--nodes $(NODES),)
