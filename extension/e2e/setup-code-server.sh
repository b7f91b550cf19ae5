#!/usr/bin/env bash
# Installs code-server from the npm registry (no other hosts) plus Debian's headless Chromium,
# for the end-to-end test. Idempotent; prints the code-server entry point on its last line.
#
# Why not a plain `npm install code-server`: its postinstall runs `npm install` in lib/vscode,
# where @vscode/ripgrep downloads a prebuilt rg from GitHub (no network here) and kerberos needs
# libkrb5-dev. So we install with --ignore-scripts, point @vscode/ripgrep at Debian's rg, and
# then run the remaining install scripts (native modules build from source with node-gyp).
set -euo pipefail
export npm_config_yes=true   # node-pty's post-install runs `npx node-gyp`; npm here defaults to yes=false
CS_VERSION="${CODE_SERVER_VERSION:-4.100.3}"   # last line whose engines.node is 20 (matches this machine's Node)
DIR="${CODE_SERVER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ledex-e2e/code-server-$CS_VERSION}"
ENTRY="$DIR/node_modules/code-server/out/node/entry.js"
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"

if [ -f "$DIR/.ok" ] && [ -f "$ENTRY" ]; then echo "$ENTRY"; exit 0; fi

need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
command -v rg >/dev/null || need_apt+=(ripgrep)
[ -f /usr/include/gssapi/gssapi.h ] || need_apt+=(libkrb5-dev)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v g++ >/dev/null || need_apt+=(g++ make)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "apt-get install ${need_apt[*]}" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}") >&2
fi

if [ "$NODE_MAJOR" != "20" ]; then
  echo "warning: code-server $CS_VERSION wants Node 20, this is Node $NODE_MAJOR" >&2
fi

mkdir -p "$DIR"
cd "$DIR"
[ -f package.json ] || echo '{"name":"ledex-e2e-code-server","private":true}' > package.json
echo "npm install code-server@$CS_VERSION (scripts off)" >&2
npm install --no-audit --no-fund --ignore-scripts "code-server@$CS_VERSION" >&2
npm rebuild --no-audit argon2 >&2 || echo "warning: argon2 did not build (only needed for --auth password)" >&2

cd node_modules/code-server/lib/vscode
echo "npm install lib/vscode (scripts off)" >&2
npm install --no-audit --no-fund --omit=dev --ignore-scripts >&2
mkdir -p node_modules/@vscode/ripgrep/bin
ln -sf "$(command -v rg)" node_modules/@vscode/ripgrep/bin/rg
echo "npm rebuild lib/vscode (native modules from source)" >&2
npm rebuild --no-audit >&2
# What code-server's postinstall.sh does after its npm install:
rm -rf node_modules.asar && ln -s node_modules node_modules.asar
(cd bin/remote-cli && rm -f code-server && ln -s code-linux.sh code-server)
(cd bin/helpers && rm -f browser.sh && ln -s browser-linux.sh browser.sh)
cd extensions
echo "npm install lib/vscode/extensions" >&2
npm install --no-audit --no-fund --omit=dev >&2
touch "$DIR/.ok"
echo "$ENTRY"
