# Quick start: `make demo` and `make test`. Both do all the set-up themselves on a fresh machine.
SHELL := /bin/bash
PY := .venv/bin/python
PIP := .venv/bin/pip
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := chromium openssh-server openssh-client prometheus-pushgateway shellcheck mmdebstrap umoci runc
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup venv system-packages npm-packages lab-binaries linters demo test lint unit lab-up lab-down bench gpu-host-check

setup: venv system-packages npm-packages lab-binaries linters

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
