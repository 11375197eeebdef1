#!/usr/bin/env bash
# Build the Dex OpenID Connect provider that the SSO tests start on loopback.
#
#   scripts/build_dex.sh            # writes .tools/bin/dex (skipped when up to date)
#
# Dex's own go.mod has replace directives, so `go install github.com/dexidp/dex/cmd/dex@VERSION`
# refuses it; tools/dex is a tiny module of ours that requires Dex at a pinned version, with every
# dependency pinned by tools/dex/go.sum, fetched through the Go module proxy. The binary is rebuilt
# only when it is missing or older than tools/dex/go.mod or go.sum (the pin).
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=".tools/bin/dex"
STAMP=".tools/bin/dex.stamp"
pin="$(cat tools/dex/go.mod tools/dex/go.sum | sha256sum | cut -d' ' -f1)"

if [[ -x "$OUT" && -f "$STAMP" && "$(cat "$STAMP")" == "$pin" ]]; then
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "build_dex.sh: go not found; install Go 1.25 or newer to build Dex for the SSO tests" >&2
  exit 1
fi

mkdir -p .tools/bin
# Pure Go (no cgo): the tests use Dex's in-memory storage, so the SQLite driver is not needed,
# and the build needs no C toolchain. -mod=readonly: go.sum is the pin, never rewritten here.
(cd tools/dex && CGO_ENABLED=0 go build -mod=readonly -trimpath -o "../../$OUT.tmp" github.com/dexidp/dex/cmd/dex)
mv "$OUT.tmp" "$OUT"
echo "$pin" > "$STAMP"
echo "build_dex.sh: built $OUT"
