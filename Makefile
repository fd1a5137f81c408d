# make demo: see the guard pause bad campaigns on embedded defaults.
# make test: lint (ruff; lint-imports: the layering contracts of pyproject.toml), then the whole suite: unit,
# integration and faults on every broker of the matrix (Tansu; Apache Kafka too when Java 17+ and Maven are present), Helm chart.
# make image-check: the image built with podman and run as the Helm chart runs it (root; CI runs it beside make test).
PYTHON ?= python3
# Apache Kafka's jars (fetched by Maven on first use) and other test tools live in the ignored .tools/
export GUARD_KAFKA_CACHE ?= $(CURDIR)/.tools
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test image-check bench quality lock clean

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
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest

image-check: $(INSTALLED)
	scripts/image-check.sh

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

# The image's hashed dependency locks (docker/*.lock), after a change to pyproject.toml or constraints.txt.
lock:
	scripts/lock-image.sh

clean:
	rm -rf $(VENV) .venv-peer .pytest_cache .hypothesis .tools
