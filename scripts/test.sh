#!/usr/bin/env bash
# README command two: installs what is missing, then runs every test. The end-to-end tests start
# their own nats-server and moto_server on free loopback ports and stop them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
# The tracing tests run the real `lifeboat` binary, which `cargo test` does not build.
cargo build --locked --bin lifeboat
export LIFEBOAT_BIN="$PWD/target/debug/lifeboat"
cargo test --workspace --locked "$@"
