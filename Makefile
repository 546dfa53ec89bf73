# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv and install the pinned requirements (requirements.txt) on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): requirements.txt setup.py
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	grep -v -i '^pyaudio' requirements.txt > $(VENV)/requirements-core.txt
	$(BIN)/pip install -q -r $(VENV)/requirements-core.txt
	@# pyaudio builds against PortAudio (apt: portaudio19-dev); without it only live capture is missing.
	$(BIN)/pip install -q $$(grep -i '^pyaudio' requirements.txt) || \
	  echo "WARNING: pyaudio not installed (apt-get install portaudio19-dev); capture tests will skip"
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/av-localize demo -o out/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q test

clean:
	rm -rf $(VENV) out build *.egg-info
