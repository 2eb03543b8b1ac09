# rest-vs-stream: every entry point. `make bench` and `make test` set up what they need.
SHELL := /bin/bash
PY    ?= .venv/bin/python
VENV_STAMP := .venv/.installed
MODEL_STAMP := var/model/model.json

# Where the IMDB train/test CSVs live (train.csv.gz, test.csv.gz). Point it at your copy.
DATA ?= $(abspath ../shared/data/imdb)
export RVS_DATA_DIR ?= $(DATA)

# The embedded broker of every local run: Apache Kafka (JVM, jars resolved by Maven once), or
# tansu for a machine without a JVM (memory storage, quirks in the README).
BROKER ?= kafka
export RVS_BROKER ?= $(BROKER)

# Bring your own model and payloads, and a synthetic model cost (README "Bring your own model"):
# MODEL=package.module:factory (default: the IMDB model, which `make model` trains; another model
# is not trained, only checked), PAYLOAD=file.jsonl|csv|parquet and PAYLOAD_COLUMN=text (or * for
# whole rows) for every scenario's inputs, COST_US=µs of CPU added per input (labelled synthetic;
# a comma list such as 0,250,1000,4000 is an axis, for `make verdict`). Passed on as RVS_*.
MODEL          ?=
PAYLOAD        ?=
PAYLOAD_COLUMN ?=
COST_US        ?=
export RVS_MODEL          := $(or $(MODEL),$(RVS_MODEL))
export RVS_PAYLOAD        := $(if $(PAYLOAD),$(abspath $(PAYLOAD)),$(RVS_PAYLOAD))
export RVS_PAYLOAD_COLUMN := $(or $(PAYLOAD_COLUMN),$(RVS_PAYLOAD_COLUMN))
export RVS_COST_US        := $(or $(COST_US),$(RVS_COST_US))
# the IMDB model is trained only when no other model is named
OWN_MODEL := $(filter-out imdb-tfidf,$(RVS_MODEL))

SCENARIO ?=
TARGET   ?= local
RUN      ?= results/latest
BASE     ?= results/baseline
HEAD     ?= results/latest
PYTEST_ARGS ?=
CEILING_ARGS ?=
# make verdict: the capacity plan's target (reviews/s) and SLO (p99 ms; default: the scenario's),
# the deployments (comma-separated; default: the scenario's) and the workload scenario.
TARGET_RATE ?=
SLO_P99_MS  ?=
MODES       ?=
VERDICT_ARGS ?=

.PHONY: help setup system venv kafka model payload test test-fast bench bench-full report compare \
        ceiling capacity verdict up down compose-check clean

help:
	@echo "make bench            run the default scenarios on the embedded stack, then report"
	@echo "make bench SCENARIO=x run one scenario (smoke, steady, seed, sweep, ...)"
	@echo "make bench-full       run every shipped scenario"
	@echo "make test             set up and run the whole test suite"
	@echo "make model            train the model artifact (DATA=folder with train/test.csv.gz)"
	@echo "make bench MODEL=pkg.mod:factory PAYLOAD=file.jsonl COST_US=1000"
	@echo "                      your own model, your own inputs, a synthetic cost per input"
	@echo "make report RUN=dir   rebuild a run's report from its folder"
	@echo "make compare BASE=x HEAD=y   regression verdict for CI"
	@echo "make ceiling          each variant's saturated throughput vs the model ceiling"
	@echo "make verdict          which deployment to use: capacity, latency, overload, a plan"
	@echo "make verdict COST_US=0,250,1000,4000   the verdict along a synthetic model-cost axis"
	@echo "                      (TARGET_RATE=reviews/s SLO_P99_MS=ms MODES=rest,stream)"
	@echo "make capacity         each driver's sustained rate against the services' own peaks (headroom vs 3x)"
	@echo "make up / make down   the same services on Apache Kafka with docker compose"

setup: system venv kafka

# System packages: nginx for the REST deployment, a JVM and Maven for the embedded Apache Kafka,
# Debian's docker-compose to validate the compose file without an engine. Installed only when
# missing; needs root (as on CI).
system:
	@missing=""; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	if [ "$(BROKER)" = kafka ]; then \
	  command -v java >/dev/null 2>&1 || missing="$$missing openjdk-17-jre-headless"; \
	  command -v mvn >/dev/null 2>&1 || missing="$$missing maven"; \
	fi; \
	command -v docker-compose >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to apt-get install$$missing (or install them yourself)"; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	fi

venv: $(VENV_STAMP)
$(VENV_STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $@

# Apache Kafka's broker jars (services/kafka/pom.xml, pinned) into var/kafka/, once.
kafka: venv
	@if [ "$(BROKER)" = kafka ]; then $(PY) -m services.kafka fetch; fi

model: venv
ifeq ($(OWN_MODEL),)
	@$(PY) -m services.model.train --if-stale
else
	@echo "MODEL=$(OWN_MODEL): the IMDB model is not trained"
endif
	@if [ -n "$(OWN_MODEL)$(RVS_COST_US)" ]; then $(PY) -m services.model.check; fi

# A payload file named with PAYLOAD=: checked before anything runs (one line if it can't serve).
payload: venv
	@if [ -n "$(RVS_PAYLOAD)" ]; then \
	  $(PY) -m loadgen.payload_file check "$(RVS_PAYLOAD)" --column "$(or $(RVS_PAYLOAD_COLUMN),text)"; fi

test: setup model
	$(PY) -m pytest $(PYTEST_ARGS)

# Unit tests only: no process of the stack is started.
test-fast: venv
	$(PY) -m pytest -m "not stack" $(PYTEST_ARGS)

bench: setup model payload
	$(PY) -m bench run $(if $(SCENARIO),$(SCENARIO),--default) --target $(TARGET) $(if $(REPEAT),--repeat $(REPEAT))

bench-full: setup model payload
	$(PY) -m bench run --all --target $(TARGET)

report: venv
	$(PY) -m analysis report $(RUN)

compare: venv
	$(PY) -m analysis compare $(BASE) $(HEAD)

ceiling: setup model payload
	$(PY) -m bench ceiling $(CEILING_ARGS)

# Which deployment to use (<= 15 minutes on 2 cores): each one's capacity, latency at 1/4 1/2 3/4
# of it, the article's batch-and-retry load at 1.5x and 3x it, the winner per load regime and a
# capacity plan for TARGET_RATE within SLO_P99_MS. COST_US=0,250,1000,4000 (a list): all of it at
# each synthetic cost per input, phases shortened (<= 20 minutes), and where the winner changes.
comma := ,
verdict: setup model payload
	$(PY) -m bench verdict $(if $(SCENARIO),--scenario $(SCENARIO)) $(if $(MODES),--modes $(MODES)) \
	  $(if $(findstring $(comma),$(COST_US)),--cost-us $(COST_US)) \
	  $(if $(TARGET_RATE),--target-rate $(TARGET_RATE)) $(if $(SLO_P99_MS),--slo-p99-ms $(SLO_P99_MS)) \
	  --target $(TARGET) $(VERDICT_ARGS)

capacity: setup
	$(PY) -m loadgen capacity

compose-check: system
	docker-compose -f docker-compose.yml --profile bench --profile report config -q && echo "docker-compose.yml is valid"

up:
	docker compose up -d --build --wait

down:
	docker compose --profile bench --profile report down --remove-orphans

clean:
	rm -rf .venv var build .pytest_cache
