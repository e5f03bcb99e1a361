#!/usr/bin/env bash
# Installs the data the demo's CNN study trains on (Fashion-MNIST from Debian's dataset-fashion-mnist), if missing.
# Idempotent; without root or apt-get it says what to install instead. VENE_FASHION_MNIST=DIR points elsewhere.
set -euo pipefail
if [ -n "${VENE_FASHION_MNIST:-}" ] || [ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "vene setup: installing dataset-fashion-mnist" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
else
  echo "vene setup: Fashion-MNIST is missing; install the Debian package dataset-fashion-mnist or set VENE_FASHION_MNIST=DIR" >&2
fi
