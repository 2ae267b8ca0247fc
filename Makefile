# Anbang: `make run` starts everything with demo data; `make test` sets up and runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The suite on every core (at most four): each worker is a pytest session with its own embedded
# database; a file's tests stay together on one worker, the longest files first in the order
# tests/conftest.py gives (not xdist's, by number of tests, which left a file of one long test
# for last). `PYTEST_ARGS=` runs it in one process. The 15 slowest tests are listed at the end.
PYTEST_ARGS ?= -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder --durations=15

# The console's browser tests drive Debian's Chromium (and its CJK fonts, so Chinese renders as
# text in screenshots); installed here when missing, as root or through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-fast bench verify lint format clean browser hsm screenshots nginx deploy-check fonts poppler

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Anbang needs Python 3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,verify]'
	touch $(STAMP)

run: $(STAMP) fonts
	exec $(BIN)/python -m server dev

test: $(STAMP) lint browser hsm fonts poppler
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fast tier while you work: no process, browser or HTTP server, nothing waiting on real time
# (tests/conftest.py marks the rest `slow`); no lint, no system packages.
test-fast: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m "not slow"

browser:
	@command -v chromium >/dev/null && [ -d /usr/share/fonts/opentype/noto ] || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			chromium fonts-noto-cjk >/dev/null; }

# The master key in a hardware module is tested against SoftHSM2 (a PKCS#11 token in software).
hsm:
	@command -v softhsm2-util >/dev/null && [ -f /usr/lib/softhsm/libsofthsm2.so ] || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			softhsm2 >/dev/null; }

# Every PDF (documents, reports) embeds a subset of AR PL UMing (Arphic Public License, which
# allows embedding): TrueType outlines, which reportlab can embed; installed when missing.
fonts:
	@[ -f /usr/share/fonts/truetype/arphic/uming.ttc ] || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			fonts-arphic-uming >/dev/null; }

# `pdftoppm` turns a document's PDF into the PNG the screenshots show.
poppler:
	@command -v pdftoppm >/dev/null || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			poppler-utils >/dev/null; }

# The deployment files in ops/deploy/ are checked against Debian's nginx (`nginx -t`, and a live
# nginx in front of two API processes); installed here when missing, as root or through sudo.
nginx:
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			nginx >/dev/null; }

# ops/deploy/README.md: the nginx site, systemd units, environment file and compose file.
deploy-check: $(STAMP) nginx
	$(BIN)/python -m pytest -q -p no:randomly tests/ops/test_deploy_check.py

# The console's key pages at 1366x768, written to var/screenshots/.
screenshots: $(STAMP) browser fonts poppler
	ANBANG_SCREENSHOTS=var/screenshots $(BIN)/python -m pytest -q -p no:randomly \
		tests/handlers/test_console.py tests/handlers/test_documents_console.py \
		tests/handlers/test_console_casework.py tests/handlers/test_console_review.py \
		tests/handlers/test_console_contact.py tests/handlers/test_console_casefile.py \
		tests/handlers/test_console_dashboard.py tests/handlers/test_console_oversight.py \
		tests/handlers/test_console_casefile_gaps.py tests/handlers/test_alerts_paging.py \
		tests/handlers/test_console_audit_accounts.py tests/handlers/test_audit_file_finder.py \
		-k "screenshots or told_at_the_console or nothing_was_recorded or finds_people_opens \
		or review_shows_photo or file_lists_check_ins or records_a_talk or files_an_admonishment \
		or waits_its_turn or records_the_return or opens_a_program_records or transfer_is_accepted \
		or investigation_is_assigned or station_dashboard or county_dashboard \
		or county_overview or queues_show or alerts_name or assistance_board \
		or audit_administrator_sees or access_log_is_filtered or documents_to_print \
		or suspends_a_program or late_release_notice or drug_test_result \
		or needs_assessment_is_shown or pages_open_and_acknowledged or picks_the_account \
		or finds_the_file_by_name"

bench: $(STAMP)
	$(BIN)/python -m ops.bench

# Load, faults, backup and restore, hostile input and a log scan; a summary table at the end
# (docs/verification.md). `VERIFY_ARGS=--parts load` runs one part.
VERIFY_ARGS ?=
verify: $(STAMP)
	$(BIN)/python -m ops.verify $(VERIFY_ARGS)

# The layering (server -> handlers | miniprogram_api | jobs -> models) is [tool.importlinter] in
# pyproject.toml; no cache, so nothing is written into the work tree.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/mypy server handlers miniprogram_api jobs models

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
