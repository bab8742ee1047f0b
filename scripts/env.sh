# Sourced by the scripts: puts .venv/bin on PATH and, without mold, overrides the linker flags of
# .cargo/config.toml so the build still works.
LIFEBOAT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$LIFEBOAT_ROOT/.venv/bin:$PATH"
if ! command -v mold >/dev/null 2>&1; then
  export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS=""
fi
