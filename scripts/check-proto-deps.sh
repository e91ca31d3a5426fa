#!/usr/bin/env bash
# flotilla-proto holds the pure, deterministic protocol machines: it must not depend on an async
# runtime. Fails if tokio, futures or mio appear among its normal dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(cargo tree -p flotilla-proto -e normal --prefix none --locked)
if bad=$(printf '%s\n' "$tree" | grep -E '^(tokio|futures|futures-[a-z-]+|mio) ' ); then
  echo "flotilla-proto must not depend on an async runtime, but depends on:" >&2
  printf '%s\n' "$bad" | sort -u >&2
  exit 1
fi
echo "ok: flotilla-proto depends on $(printf '%s\n' "$tree" | sort -u | wc -l) crates, none of them a runtime"
