# Two commands do all set-up on a fresh machine:
#   make book   the website, into _build/html
#   make test   unit tests, the chapters under nbval (quick mode) and the website in a browser
#   make student the student edition: the website and the notebooks without solutions, in _build/student
# Other targets: make colab-check (every chapter as a Colab reader runs it), make notebooks (re-run every chapter in full, saving its outputs), make key (every training
# exercise's solution in quick mode, about 30 min, then in full with the instructor's key written, about 80 min
# on 2 cores; make key-check: the quick part alone), make bench, make lint, make gpu-check (every GPU recipe on a
# GPU for a short budget, about 10 min; not part of make test), make compat (the unit tests and three chapters
# with the oldest versions pyproject.toml allows, in .venv-compat).

PYTHON ?= python3
# TORCH_INDEX=https://download.pytorch.org/whl/cpu: torch and torchvision from PyTorch's CPU build, no CUDA
TORCH_INDEX ?=
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
COMPAT := .venv-compat
CPY    := $(COMPAT)/bin/python
COMPAT_CHAPTERS := chapters/01_simple_cnn.ipynb chapters/05_googlenet.ipynb chapters/08_efficientnet.ipynb
export CNN_BOOK_PROGRESS ?= 0

.PHONY: book test data notebooks bench lint compat clean student key key-check gpu-check colab-check

$(STAMP): requirements.txt requirements-offline.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install -q --index-url $(TORCH_INDEX) $(shell grep -E '^torch(vision)?==' requirements.txt | cut -d' ' -f1))
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --require-hashes -r requirements-offline.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

data: $(STAMP)
	$(PY) -m cnn_book.data

book: data
	rm -rf _build/html
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going
	@echo "The website is in _build/html/index.html"

student: data
	$(PY) tools/student_edition.py

# Tests never download: CNN_BOOK_OFFLINE=1 makes pretrained weights come from torch's cache or be skipped.
# The student notebooks are not run again: they differ from the chapters only in Markdown, and
# tests/test_student.py checks that, and that each is a valid notebook.
test: data
	$(VENV)/bin/ruff check .
	CNN_BOOK_OFFLINE=1 $(PY) -m pytest -q tests
	CNN_BOOK_OFFLINE=1 CNN_BOOK_QUICK=1 $(PY) -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider chapters book

notebooks: data
	$(PY) tools/execute_notebooks.py chapters/*.ipynb book/*.ipynb

# Every solution in quick mode after its chapter's set-up (a unit test marked "key", left out of make test).
key-check: data
	CNN_BOOK_OFFLINE=1 $(PY) -m pytest -q -m key tests/test_instructor_key.py

key: key-check
	$(PY) tools/instructor_key.py run
	$(PY) tools/instructor_key.py page

# On a machine with a GPU: every GPU recipe for a short budget, written to benchmarks/gpu_check.json.
gpu-check: data
	$(PY) tools/gpu_check.py

bench: data
	$(PY) benchmarks/bench.py

# Every chapter in quick mode in a fresh environment of only Colab's usual packages (.venv-colab), its set-up
# cell run as on Colab and pointed at this checkout; one line per notebook (not part of make test).
colab-check: data
	$(PY) tools/colab_check.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The floors of pyproject.toml, pinned in requirements-compat.txt, in a venv of their own (not part of make test).
# The browser test is left out: jupyter-book is not in the compat set.
$(COMPAT)/.installed: requirements-compat.txt pyproject.toml
	$(PYTHON) -m venv $(COMPAT)
	$(CPY) -m pip install -q --upgrade pip
	$(CPY) -m pip install -q -r requirements-compat.txt
	$(CPY) -m pip install -q --no-deps -e .
	touch $@

compat: $(COMPAT)/.installed
	$(CPY) -m cnn_book.data
	CNN_BOOK_OFFLINE=1 $(CPY) -m pytest -q tests -m "not browser and not key"
	CNN_BOOK_OFFLINE=1 CNN_BOOK_QUICK=1 $(CPY) -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider \
		$(COMPAT_CHAPTERS)

clean:
	rm -rf _build .pytest_cache
