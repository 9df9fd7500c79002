# `make run` sets up and starts the service (`make supervise`: restarting processes that die);
# `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
REDIS_PORT ?= 6379

.PHONY: run supervise test lint typecheck format redis

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

redis:
	@$(BIN)/python -c "import redis,sys; redis.Redis(port=$(REDIS_PORT)).ping()" 2>/dev/null \
	  || redis-server --daemonize yes --bind 127.0.0.1 --port $(REDIS_PORT) --save "" --appendonly no \
	  || (echo "Redis is not running and redis-server is not installed (apt-get install redis-server)"; exit 1)
	@for i in 1 2 3 4 5 6 7 8 9 10; do \
	  $(BIN)/python -c "import redis; redis.Redis(port=$(REDIS_PORT)).ping()" 2>/dev/null && exit 0; sleep 0.5; done; \
	  echo "Redis did not come up on port $(REDIS_PORT)"; exit 1

# The self-hosted trainer's tests train a tiny model on the CPU: they need the GPU stack.
$(BIN)/.installed-gpu: $(BIN)/.installed requirements-gpu.txt
	$(BIN)/pip install --quiet -r requirements-gpu.txt
	touch $@

# Development: honcho runs the Procfile and stops everything when one process exits.
run: $(BIN)/.installed redis
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/honcho start -f Procfile

# Production: supervisord runs the same processes and restarts any that dies (.env, if
# present, is read as honcho reads it).
supervise: $(BIN)/.installed redis
	set -a; if [ -f .env ]; then . ./.env; fi; set +a; \
	  exec $(BIN)/supervisord -c deploy/supervisord.conf

test: $(BIN)/.installed $(BIN)/.installed-gpu redis
	$(BIN)/python -m pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: $(BIN)/.installed $(BIN)/.installed-gpu
	$(BIN)/mypy

format: $(BIN)/.installed
	$(BIN)/ruff format .
