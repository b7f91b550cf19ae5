#!/usr/bin/env bash
# Builds, unit-tests and packages the VS Code extension; then runs the end-to-end test in
# code-server + headless Chromium when LEDEX_E2E is not 0 and the tools can be had.
# Called from .ci/run as: bash extension/ci.sh
#   LEDEX_E2E=0      skip the end-to-end test
#   LEDEX_E2E=stub   end-to-end against e2e/stub_server.py only (extension side; ~2 min)
#   LEDEX_E2E=real   stub, then against the real ledex-lsp + model (slow: model on 2 cores;
#                    LEDEX_E2E_TIMEOUT seconds, default 1200)
#   LEDEX_E2E=auto   (default) stub only: ~1 min of install (first time ~3) + ~2 min of test
set -euo pipefail
cd "$(dirname "$0")"
echo "== extension: npm ci"
npm ci --no-audit --no-fund
echo "== extension: compile (tsc typecheck + esbuild bundle)"
npm run compile
echo "== extension: unit tests"
npm test
echo "== extension: package"
npm run package
ls -l ledex.vsix

mode="${LEDEX_E2E:-auto}"
[ "$mode" = 0 ] && { echo "== extension: e2e skipped (LEDEX_E2E=0)"; exit 0; }
py="${LEDEX_PYTHON:-../.venv/bin/python}"
[ -x "$py" ] || py=python3
if ! bash e2e/setup-code-server.sh >/dev/null; then
  echo "== extension: e2e FAILED: could not install code-server/chromium (see above)"; exit 1
fi
if [ "$mode" = auto ] || [ "$mode" = stub ] || [ "$mode" = real ]; then
  echo "== extension: e2e (stub server)"
  LEDEX_PYTHON="$py" node e2e/run.mjs --stub --screenshot "${E2E_OUT:-/tmp/ledex-e2e-out}/vscode-quickfix-stub.png"
fi
if [ "$mode" = real ]; then
  echo "== extension: e2e (real ledex-lsp)"
  LEDEX_PYTHON="$py" node e2e/run.mjs --timeout "${LEDEX_E2E_TIMEOUT:-1200}" --screenshot "${E2E_OUT:-/tmp/ledex-e2e-out}/vscode-quickfix.png"
fi
