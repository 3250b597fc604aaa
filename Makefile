# edge-inspector: `make run` shows the station working offline, `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
EI     := $(VENV)/bin/edge-inspector
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
RUN    ?= out/demo
HIDES  ?= 3
SEED   ?= 7

.PHONY: run test bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*; touch $@

# Synthetic 8K recording -> default model -> replay at line speed, marks to a soft-PLC over
# Modbus TCP -> summary, hide maps, DXF per hide, SQLite, marks fired -> eval incl. marking accuracy
# -> the command that opens the run in a browser (docs/operator.md).
run: $(STAMP)
	mkdir -p $(RUN)
	$(EI) synth -o $(RUN)/hides.raw --hides $(HIDES) --seed $(SEED)
	@# exit 4 = some marks were not fired (a machine too slow for the line): the summary says so; go on to eval
	$(EI) replay $(RUN)/hides.raw --station configs/stations/demo-8k.toml --out $(RUN) --overwrite --realtime --plc sim \
		|| [ $$? -eq 4 ]
	$(EI) eval $(RUN) --truth $(RUN)/hides.raw.gt.json
	@echo "cutting room: $(RUN)/hides/hide-*.dxf (mm), $(RUN)/grading.csv"
	@echo "open the run in a browser: $(EI) web $(RUN)   (then http://127.0.0.1:8080/)"

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(EI) bench --no-model --station configs/stations/demo-8k.toml
	$(EI) bench --station configs/stations/demo-8k.toml

clean:
	rm -rf out .pytest_cache
