# make demo: see the guard pause bad campaigns on embedded defaults.
# make test: lint (ruff; lint-imports: the layering contracts of pyproject.toml), then the whole suite: unit,
# integration and faults on every broker of the matrix (Tansu; Apache Kafka too when Java 17+ and Maven are present), Helm chart.
# make image-check: the image built with podman and run as the Helm chart runs it (root; CI runs it beside make test).
# The venv holds the compiled core (core/, Rust) when cargo is on PATH; without it the guard runs its Python engine,
# except under CI=true, where both engines must be built and tested.
PYTHON ?= python3
# Apache Kafka's jars (fetched by Maven on first use) and other test tools live in the ignored .tools/
export GUARD_KAFKA_CACHE ?= $(CURDIR)/.tools
VENV := .venv
BIN := $(VENV)/bin
DEPENDENCIES := $(VENV)/.dependencies
CORE := $(VENV)/.core
INSTALLED := $(VENV)/.installed
# cargo on PATH, else where rustup puts it (a non-login shell may not have ~/.cargo/bin on PATH)
CARGO := $(or $(shell command -v cargo 2>/dev/null),$(wildcard $(HOME)/.cargo/bin/cargo))

.PHONY: demo test image-check bench quality lock clean

# The guard with its test extra, and the compiled core when it can be built.
$(INSTALLED): $(DEPENDENCIES) $(if $(CARGO),$(CORE))
ifeq ($(CARGO),)
ifeq ($(CI),true)
	@echo "CI=true and no cargo on PATH: CI builds and tests both engines; install Rust (rustup, or Debian's cargo-web)" >&2
	@exit 1
endif
	@echo "no cargo on PATH: the compiled core is not built, the guard runs its Python engine"
endif
	touch $@

$(DEPENDENCIES): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip==25.3
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

# The compiled core, a wheel built by maturin (pinned in core/pyproject.toml) from Cargo.lock's crates;
# a change to its sources rebuilds it alone.
$(CORE): core/pyproject.toml core/Cargo.toml core/Cargo.lock $(wildcard core/src/*.rs) | $(DEPENDENCIES)
	PATH="$(dir $(CARGO)):$$PATH" $(BIN)/pip install --quiet --disable-pip-version-check ./core
	touch $@

demo: $(INSTALLED)
	$(BIN)/guard demo

# Two test workers (pytest-xdist): the tests of each broker share one worker, which alone starts that broker
# (tests/conftest.py), and most of a broker test's time is waiting on the broker and the guard, not the CPU.
TEST_WORKERS ?= 2

test: $(INSTALLED)
	$(BIN)/ruff check guard tests bench
	$(BIN)/ruff format --check guard tests bench
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup

image-check: $(INSTALLED)
	scripts/image-check.sh

# Speed, latency, memory and recovery against the ceilings and the peers (writes bench/RESULTS.md): Quix Streams
# in .venv-peer, Kafka Streams from Maven Central when Java 17+, javac and Maven are present (else reported as skipped).
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
	rm -rf $(VENV) .venv-peer .pytest_cache .hypothesis .tools core/target
