# Two commands do all set-up: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: run test bench backtest install clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the pins or the package metadata change.
$(STAMP): $(PY) requirements.lock pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	# Put the repo on the venv's path (driver and Ray workers alike) without a build step.
	$(PY) -c 'import os, site; open(os.path.join(site.getsitepackages()[0], "quantumtrader.pth"), "w").write(os.getcwd() + "\n")'
	touch $(STAMP)

install: $(STAMP)

# A starter ML model from a simulated morning when models/ has none (the ML voter abstains without one):
# the training pipeline's purged CV, calibration and per-fold backtests; its card says what it is worth.
models/registry.json: | $(STAMP)
	$(PY) scripts/train_model.py train --sim --date 2026-11-23 --start 09:00 --end 13:00 --seed 0 \
		--name starter-sim --out models

run: $(STAMP) models/registry.json
	$(PY) scripts/launch.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

# A report for a simulated WDO day by default: make backtest ARGS="es" for the ES tape (scripts/backtest.py --help).
backtest: $(STAMP) models/registry.json
	$(PY) scripts/backtest.py $(or $(ARGS),sim --day)

bench: $(STAMP)
	$(PY) scripts/bench.py $(ARGS)

clean-venv:
	rm -rf $(VENV)
