#!/usr/bin/env bash
# Refreshes the vendored web assets of the console from the npm registry. Run by hand (never by
# the build); then update the versions in console/src/assets.rs and console/assets/README.md.
set -euo pipefail
cd "$(dirname "$0")/assets"

GRAPHIQL=3.8.3
REACT=18.3.1
GRAPHQL_WS=5.16.2
SWAGGER_UI=5.35.0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# vendor PACKAGE VERSION FILE...: copies FILE (a path inside the package) to PACKAGE@VERSION/FILE.
vendor() {
  local pkg=$1 ver=$2
  shift 2
  (cd "$tmp" && npm pack --silent "$pkg@$ver" >/dev/null && mkdir -p "$pkg@$ver" && tar xzf "${pkg}-${ver}.tgz" -C "$pkg@$ver")
  rm -rf "$pkg@$ver"
  for f in "$@"; do
    mkdir -p "$pkg@$ver/$(dirname "$f")"
    cp "$tmp/$pkg@$ver/package/$f" "$pkg@$ver/$f"
  done
}

vendor graphiql "$GRAPHIQL" graphiql.min.js graphiql.min.css LICENSE
vendor react "$REACT" umd/react.production.min.js LICENSE
vendor react-dom "$REACT" umd/react-dom.production.min.js LICENSE
vendor graphql-ws "$GRAPHQL_WS" umd/graphql-ws.min.js LICENSE.md
vendor swagger-ui-dist "$SWAGGER_UI" swagger-ui-bundle.js swagger-ui.css LICENSE NOTICE swagger-ui-bundle.js.LICENSE.txt
echo "vendored into $(pwd):"
find . -name '*@*' -maxdepth 1 | sort
