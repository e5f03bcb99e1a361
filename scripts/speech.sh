#!/usr/bin/env bash
# Installs Debian's espeak-ng, which synthesises the speech the Silero VAD study (`vene vad-state`, a `vene demo`
# section) and its tests run on. Idempotent: nothing happens when `espeak-ng` is already on the PATH.
set -euo pipefail
command -v espeak-ng >/dev/null && exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
if ! command -v apt-get >/dev/null; then
  echo "vene setup: install espeak-ng (the speech synthesiser) with your package manager" >&2
  exit 1
fi
echo "vene setup: installing espeak-ng (speech for the Silero VAD study)" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends espeak-ng >/dev/null
command -v espeak-ng >/dev/null || { echo "vene setup: espeak-ng did not install" >&2; exit 1; }
