#!/usr/bin/env bash
# Every test rkube has: formatting, clippy with warnings denied, unit tests, integration tests
# against a real etcd, and end-to-end tests with the real kubectl. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

./hack/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== binaries (the end-to-end suite in tests/ runs them; building here keeps its own build a no-op)"
cargo build --workspace --bins --quiet

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --failure-output final --status-level fail
else
  cargo test --workspace --no-fail-fast
fi
