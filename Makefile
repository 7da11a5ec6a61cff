# The README's two commands: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
PIP = $(PYTHON) -m pip install --quiet

# torch first, on its own: with torch already present nothing is replaced; otherwise 2.13.0
# (on the project's machines a CPU build on local disk, elsewhere PyPI's default build).
.PHONY: torch install install-dev demo test
torch:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) "torch==2.13.0"

install: torch
	$(PIP) -e ".[all]"

install-dev: torch
	$(PIP) -e ".[all,dev]"

demo: install
	$(PYTHON) examples/long_documents.py

test: install-dev
	$(PYTHON) -m pytest -q
