#!/usr/bin/env bash
# Re-vendors the GraphiQL explorer's browser assets into src/http/graphiql/assets/.
# The server embeds these files, so GraphiQL works with no internet access.
# To upgrade: change a version, set its integrity to `npm view PKG@VERSION dist.integrity`,
# run this script, then check the page in a browser (tests/browser).
set -euo pipefail

GRAPHIQL_VERSION=4.0.3
GRAPHIQL_INTEGRITY=sha512-/kSuorVA1qzP796/gckJzpsRveoIsm/1UJI5a8QnI1NLlXvI3ILxSHOB6P7T6rooV+CRU8HfcWItPmqyxPjC3g==
REACT_VERSION=18.3.1
REACT_INTEGRITY=sha512-wS+hAgJShR0KhEvPJArfuPVN1+Hz1t0Y6n5jLrGQbkb4urgPE/0Rve+1kMB1v/oWgHgm4WIcV+i7F2pTVj+2iQ==
REACT_DOM_INTEGRITY=sha512-5m4nQKp+rZRb09LNH59GM4BxTh9251/ylbKIbpe7TpGxfJ+9kv6BLkLBXIjjspbgbnIBNqlI23tRnTWT0snUIw==
# The graphql-transport-ws client GraphiQL runs subscriptions with.
GRAPHQL_WS_VERSION=6.4.2
GRAPHQL_WS_INTEGRITY=sha512-wxhPhhOGJo8PbGDkBYVE76sZLDrS+GkyrR4bZECSLVbo0pZZNKs0HtBh2Ip/uaUuiVUxwO9ssI9R92buQfNSqQ==

assets="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/assets"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Downloads NAME@VERSION with npm, checks it against INTEGRITY and unpacks it to $work/NAME.
fetch() {
    local name=$1 version=$2 integrity=$3 tarball actual
    tarball="$(cd "$work" && npm pack --silent "$name@$version" | tail -n 1)"
    actual="sha512-$(node -e 'const c = require("crypto"), fs = require("fs");
        process.stdout.write(c.createHash("sha512").update(fs.readFileSync(process.argv[1])).digest("base64"))' \
        "$work/$tarball")"
    if [[ "$actual" != "$integrity" ]]; then
        echo "integrity mismatch for $name@$version: got $actual" >&2
        exit 1
    fi
    mkdir -p "$work/$name"
    tar -xzf "$work/$tarball" -C "$work/$name" --strip-components=1
}

fetch graphiql "$GRAPHIQL_VERSION" "$GRAPHIQL_INTEGRITY"
fetch react "$REACT_VERSION" "$REACT_INTEGRITY"
fetch react-dom "$REACT_VERSION" "$REACT_DOM_INTEGRITY"
fetch graphql-ws "$GRAPHQL_WS_VERSION" "$GRAPHQL_WS_INTEGRITY"

rm -rf "$assets"
mkdir -p "$assets"
# The bundle's last line points at a 4.7 MB source map that is not shipped; drop it so
# browser dev tools do not report a failed request.
sed '/^\/\/# sourceMappingURL=/d' "$work/graphiql/dist/index.umd.js" >"$assets/graphiql.min.js"
# Fonts and icons are inlined as data: URIs; refuse a stylesheet that points anywhere else.
if grep -o 'url([^)]*)' "$work/graphiql/dist/style.css" | grep -v '^url("\{0,1\}data:' >&2; then
    echo "graphiql's stylesheet references files by URL: vendor them too" >&2
    exit 1
fi
cp "$work/graphiql/dist/style.css" "$assets/graphiql.min.css"
cp "$work/graphiql/LICENSE" "$assets/LICENSE-graphiql"
cp "$work/react/umd/react.production.min.js" "$assets/react.production.min.js"
cp "$work/react/LICENSE" "$assets/LICENSE-react"
cp "$work/react-dom/umd/react-dom.production.min.js" "$assets/react-dom.production.min.js"
cp "$work/react-dom/LICENSE" "$assets/LICENSE-react-dom"
cp "$work/graphql-ws/umd/graphql-ws.min.js" "$assets/graphql-ws.min.js"
cp "$work/graphql-ws/LICENSE.md" "$assets/LICENSE-graphql-ws"
# Part of every asset URL, so browsers may cache the files forever (see src/graphiql.rs).
printf 'graphiql-%s-react-%s-graphql-ws-%s' "$GRAPHIQL_VERSION" "$REACT_VERSION" "$GRAPHQL_WS_VERSION" >"$assets/VERSION"

ls -l "$assets"
