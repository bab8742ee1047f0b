#!/usr/bin/env bash
# README command two: installs what is missing, then runs every test. The end-to-end tests start
# their own nats-server and moto_server on free loopback ports and stop them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
# The tracing and chaos tests run the real `lifeboat` binary, which `cargo test` does not build.
# Built together with the tests: alone, `--bin lifeboat` resolves the SDKs' dependencies with
# other features (no aws-smithy-mocks) and compiles every SDK crate a second time.
cargo build --locked --workspace --tests --bins
export LIFEBOAT_BIN="$PWD/target/debug/lifeboat"
cargo test --workspace --locked "$@"
