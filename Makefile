# The two commands of the quick start: `make run` and `make test`.
# Everything else here is what those two need. Python 3.11+ is the only prerequisite.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: setup run import-example test lint bench mutation screenshots clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

# The newcomer's demo: every built-in platform simulated (HubSpot, Salesforce, Colleague, Slate,
# a Banner folder, a conversations export), the daemon, changes flowing both ways, then the sync
# log and a summary per platform. No account, no network; it stops by itself.
run: setup
	$(BIN)/contactsync demo --duration 30

# The main job on the embedded default (an SQLite hub in ./var): import the sample contacts
# through the incoming rules, then show the hub and the sync log.
import-example: setup
	$(BIN)/contactsync fields add "Class Year" --type number --exist-ok
	$(BIN)/contactsync fields add "Application Status" --type text --exist-ok
	$(BIN)/contactsync import examples/contacts.csv
	$(BIN)/contactsync contacts list --limit 10
	$(BIN)/contactsync log --limit 10

test: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -n auto --dist loadfile --durations=15

bench: setup
	$(BIN)/python bench/import_csv.py

# Mutation testing of the incoming rules, the push and the outbox (bench/mutation.md): run by
# hand, never in CI. mutmut copies the tree to ./mutants and checks each mutant with only the
# tests that reached the mutated function, from the files in [tool.mutmut]; one core, niced,
# stopped after MUTATION_TIMEOUT. Results are cached in ./mutants: a second run re-checks only
# what changed. `.venv/bin/mutmut results` lists the survivors, `mutmut show NAME` one diff.
MUTATION_TIMEOUT ?= 3h
MUTATION_JOBS ?= 1
mutation: setup
	$(BIN)/pip install --quiet -e '.[test,mutation]'
	-nice -n 19 timeout $(MUTATION_TIMEOUT) $(BIN)/mutmut run --max-children $(MUTATION_JOBS)
	$(BIN)/mutmut export-cicd-stats
	$(BIN)/python bench/mutation_score.py

# The README's pictures of the staff's pages, taken by the browser tests in Debian's Chromium
# and written over docs/screenshots/ (a plain test run keeps its own copies elsewhere).
screenshots: setup
	CONTACTSYNC_SCREENSHOTS=1 $(BIN)/pytest -q tests/test_web_browser.py

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis mutants
