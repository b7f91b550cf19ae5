#!/usr/bin/env bash
# Used as ledex.pythonPath by `run.mjs --stub`: `-m ledex.server ...` runs the stub server,
# anything else (the extension's probe, pytest) goes to the real interpreter.
PY="${LEDEX_STUB_PYTHON:-python3}"
if [ "$1" = "-m" ] && [ "$2" = "ledex.server" ]; then
  exec "$PY" "$(dirname "$0")/stub_server.py"
fi
if [ "$1" = "-c" ]; then  # the probe: pretend ledex.server exists (the stub stands in for it)
  exec "$PY" -c 'import sys; print(sys.version.split()[0], "ok")'
fi
exec "$PY" "$@"
