#!/usr/bin/env bash
# Fetch the Trino server that the Trino tests start on loopback (tests/trino_server.py).
#
#   scripts/fetch_trino.sh          # unpacks .tools/trino-<version>/ (skipped when present)
#
# Only from Maven Central, through `mvn dependency:copy` (cached in ~/.m2): the
# `io.trino:trino-server-core` tarball (the server without plugins) and the
# `io.trino:trino-hive` plugin zip, the one connector Gravix's tables use. The
# version is pinned: 476 is the newest trino-server-core Maven Central serves
# here (and the image deploy/docker-compose.yml runs). Trino 476 runs on Java 24+:
# the machine's Temurin JDK (JAVA_HOME=/usr/lib/jvm/temurin-25-jdk-amd64).
set -euo pipefail

cd "$(dirname "$0")/.."
VERSION=476  # and tests/trino_server.py VERSION
OUT=".tools/trino-$VERSION"

if [[ -x "$OUT/bin/launcher" && -f "$OUT/plugin/hive/.fetched" ]]; then
  exit 0
fi
if ! command -v mvn >/dev/null 2>&1; then
  echo "fetch_trino.sh: mvn not found; apt-get install maven (Trino comes from Maven Central)" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for artifact in "io.trino:trino-server-core:$VERSION:tar.gz" "io.trino:trino-hive:$VERSION:zip"; do
  mvn --batch-mode --quiet dependency:copy -Dartifact="$artifact" -DoutputDirectory="$work"
done

# Unpack beside the final folder, then rename: a stopped run leaves no half a server.
tar -xzf "$work/trino-server-core-$VERSION.tar.gz" -C "$work"
server="$work/trino-server-core-$VERSION"
[[ -d "$server" ]] || server="$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'trino-server*' | head -1)"
mkdir -p "$server/plugin"
python3 -m zipfile -e "$work/trino-hive-$VERSION.zip" "$work"
hive="$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'trino-hive*' | head -1)"
rm -rf "$server/plugin/hive"
mv "$hive" "$server/plugin/hive"
touch "$server/plugin/hive/.fetched"
mkdir -p .tools
rm -rf "$OUT"
mv "$server" "$OUT"
echo "fetch_trino.sh: unpacked Trino $VERSION with the Hive plugin into $OUT"
