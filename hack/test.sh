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
# End-to-end tests record the clusters they make; one killed by a timeout cannot delete its
# own, so whatever is left is deleted here, pass or fail.
RKUBE_E2E_CLUSTERS="$(mktemp)"
export RKUBE_E2E_CLUSTERS
sweep_clusters() {
  local name
  while read -r name; do
    if [ -n "$name" ] && [ -e "/var/lib/rkube/clusters/$name" ]; then
      echo "== deleting cluster $name, left behind by a killed test"
      ./target/debug/rkube cluster delete --name "$name" || true
    fi
  done <"$RKUBE_E2E_CLUSTERS"
  rm -f "$RKUBE_E2E_CLUSTERS"
}
trap sweep_clusters EXIT
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --failure-output final --status-level fail
else
  cargo test --workspace --no-fail-fast
fi
