#!/usr/bin/env bash
# Installs Debian's chromium for the test that renders the demo's report in a real browser (headless). Idempotent:
# nothing happens when `chromium` is already on the PATH.
set -euo pipefail
command -v chromium >/dev/null && exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "vene setup: installing chromium (headless, for the report test)" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null || { echo "vene setup: chromium did not install" >&2; exit 1; }
