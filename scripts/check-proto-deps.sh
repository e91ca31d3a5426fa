#!/usr/bin/env bash
# flotilla-proto (the pure, deterministic protocol machines) and flotilla-wire (the wire format)
# must not depend on an async runtime. Fails if tokio, futures or mio appear among the normal
# dependencies of either.
set -euo pipefail
cd "$(dirname "$0")/.."
for crate in flotilla-proto flotilla-wire; do
  tree=$(cargo tree -p "$crate" -e normal --prefix none --locked)
  if bad=$(printf '%s\n' "$tree" | grep -E '^(tokio|futures|futures-[a-z-]+|mio) '); then
    echo "$crate must not depend on an async runtime, but depends on:" >&2
    printf '%s\n' "$bad" | sort -u >&2
    exit 1
  fi
  echo "ok: $crate depends on $(printf '%s\n' "$tree" | sort -u | wc -l) crates, none of them a runtime"
done
