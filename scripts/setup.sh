#!/usr/bin/env bash
# Set up ledex on a fresh Debian machine: system packages (when root), a virtualenv in .venv,
# torch pinned to the CPU build (a loose torch spec would pull gigabytes of CUDA wheels),
# then ledex itself with its training and test extras. Idempotent: a second run is quick.
#
#   scripts/setup.sh            # everything
#   LEDEX_SKIP_APT=1 scripts/setup.sh   # no system packages (not root, or managed elsewhere)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

system_packages() {
  # bubblewrap: sandbox isolation; neovim, emacs-nox + elpa-eglot: the real-editor LSP tests;
  # chromium: VS Code e2e.
  local want=(bubblewrap neovim emacs-nox elpa-eglot chromium)
  local missing=()
  for pkg in "${want[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "setup: please install: ${missing[*]} (the tests that need them will skip)" >&2
    return 0
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

python_packages() {
  local stamp="$VENV/.ledex-installed"
  local want
  want=$(sha256sum pyproject.toml | cut -c1-16)
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip wheel setuptools
  "$VENV/bin/pip" install -q torch==2.13.0
  # llama-cpp-python compiles from source (about 5 minutes on 2 cores; pip caches the wheel).
  # A portable AVX2 build: -march=native picks ggml's AMX kernels on CPUs that report AMX,
  # and those segfault in VMs that do not grant AMX tile state. No llava: we need no vision.
  export CMAKE_ARGS=${CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF"}
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$VENV/bin/pip" install -q -e ".[train,test]"
  echo "$want" > "$stamp"
}

[ -n "${LEDEX_SKIP_APT:-}" ] || system_packages
python_packages
echo "setup: ready ($VENV)"
