# The two commands: `make up` (local Stratus with the sample docs) and `make test` (everything checked).
# Both set up a fresh machine by themselves: .venv with pinned dependencies, the ONNX model.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements/dev.lock requirements/nodeps.lock shared/pyproject.toml tools/pyproject.toml | cksum | cut -d' ' -f1)

SAM_VENV  := .venv-sam
SAM_STAMP := $(SAM_VENV)/.installed-aws-sam-cli-1.170.0

# checkov and pip-audit pin their own dependencies (they conflict with the dev lock): their own venv.
CHECKOV_VERSION   := 3.3.30
PIP_AUDIT_VERSION := 2.10.1
CHECK_VENV  := .venv-checkov
CHECK_STAMP := $(CHECK_VENV)/.installed-checkov-$(CHECKOV_VERSION)-pip-audit-$(PIP_AUDIT_VERSION)

.PHONY: up test setup model lint checkov audit typecheck sam-validate unit integration e2e browser chromium bench-embed clean

up: setup
	$(BIN)/stratus up

# The parser resource budgets are CPU-time bounds: they run in a process of their own, as a function
# would parse, not in one that earlier tests left full of stacks, servers and their threads.
BUDGETS := tests/unit/test_parser_budgets.py

test: setup chromium lint typecheck sam-validate
	$(BIN)/pytest -q $(BUDGETS)
	$(BIN)/pytest -q --ignore=$(BUDGETS)

setup: $(STAMP) model

$(STAMP):
	@$(PYTHON) -c 'import sys; sys.exit("Stratus needs Python >= 3.11, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements/dev.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -r requirements/nodeps.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e shared -e tools
	rm -f $(VENV)/.installed-* && touch $@

# The console's browser tests (tests/browser) drive Debian's chromium with Playwright (pinned in dev.lock;
# Playwright's own browser download is never used). Installed here when missing (CI runs as root).
chromium:
	@test -x /usr/bin/chromium || { \
		echo "installing Debian's chromium for the browser tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

# Idempotent: checks the manifest's hashes and returns at once when the model is already built.
model: $(STAMP)
	$(BIN)/python scripts/build_model.py

# ruff's S rules (bandit's checks) run with the others (pyproject.toml); checkov checks the template.
lint: $(STAMP) checkov
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/cfn-lint template.yaml
	$(BIN)/hadolint functions/embed/Dockerfile functions/embed/Dockerfile.gpu

$(CHECK_STAMP):
	test -x $(CHECK_VENV)/bin/python || $(PYTHON) -m venv $(CHECK_VENV)
	$(CHECK_VENV)/bin/python -m pip install -q --disable-pip-version-check checkov==$(CHECKOV_VERSION) pip-audit==$(PIP_AUDIT_VERSION)
	rm -f $(CHECK_VENV)/.installed-* && touch $@

# Every finding is fixed or skipped in template.yaml next to the resource, with its reason.
checkov: $(CHECK_STAMP)
	$(CHECK_VENV)/bin/checkov -f template.yaml --framework cloudformation --compact --quiet --skip-download

# Known vulnerabilities in the pinned locks (asks the PyPI advisory service: needs the network).
audit: $(CHECK_STAMP)
	$(CHECK_VENV)/bin/pip-audit --strict --no-deps --disable-pip -r requirements/runtime.lock
	$(CHECK_VENV)/bin/pip-audit --strict --no-deps --disable-pip -r requirements/dev.lock
	$(CHECK_VENV)/bin/pip-audit --strict --no-deps --disable-pip -r requirements/ocr.lock

# aws-sam-cli pins its own dependencies, so it lives in its own virtual environment.
$(SAM_STAMP):
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q --disable-pip-version-check aws-sam-cli==1.170.0
	rm -f $(SAM_VENV)/.installed-* && touch $@

sam-validate: $(SAM_STAMP)
	SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam validate --lint --template template.yaml --region us-east-1

typecheck: $(STAMP)
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q tests/unit

integration: setup
	$(BIN)/pytest -q tests/integration

e2e: setup
	$(BIN)/pytest -q tests/e2e

browser: setup chromium
	$(BIN)/pytest -q tests/browser

bench-embed: setup
	$(BIN)/stratus bench embed

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CHECK_VENV) .mypy_cache .ruff_cache .pytest_cache .stratus layers/model/all-MiniLM-L6-v2
