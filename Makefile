# make demo: see the guard pause bad campaigns on embedded defaults.
# make test: lint, then the whole suite: unit, integration on a real broker, faults, Helm chart.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test bench quality clean

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip==25.3
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

demo: $(INSTALLED)
	$(BIN)/guard demo

test: $(INSTALLED)
	$(BIN)/ruff check guard tests bench
	$(BIN)/ruff format --check guard tests bench
	$(BIN)/pytest

# Speed, latency, memory and recovery against the ceiling and a peer (writes bench/RESULTS.md).
bench: $(INSTALLED)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[bench]'
	test -x .venv-peer/bin/python || $(PYTHON) -m venv .venv-peer
	.venv-peer/bin/pip install --quiet --disable-pip-version-check quixstreams==3.28.1 aiokafka==0.14.0
	BENCH_PEER_PYTHON=$(CURDIR)/.venv-peer/bin/python $(BIN)/python -m bench

# Detection delay and healthy campaigns paused, shipped rules vs baselines and the bound (writes bench/QUALITY.md
# and bench/frontier.png).
quality: $(INSTALLED)
	$(BIN)/python -m bench.quality

clean:
	rm -rf $(VENV) .venv-peer .pytest_cache .hypothesis .tools
