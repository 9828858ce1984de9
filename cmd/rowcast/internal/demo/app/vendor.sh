#!/bin/sh
# vendor.sh copies the demo page's browser libraries from node_modules (run
# `npm ci` here first; package-lock.json pins them) into static/vendor, so
# that `rowcast demo` embeds them and needs no network and no build step.
# app_test.go fails when the copies differ from the pinned packages.
set -eu
cd "$(dirname "$0")"
v=static/vendor
cp node_modules/react/umd/react.production.min.js "$v/"
cp node_modules/react-dom/umd/react-dom.production.min.js "$v/"
cp node_modules/react/LICENSE "$v/LICENSE.react"
cp node_modules/@tanstack/query-core/LICENSE "$v/LICENSE.query-core"
rm -f "$v"/query-core/*.js
for f in node_modules/@tanstack/query-core/build/modern/*.js; do
	case "$f" in *.cjs | *.d.*) continue ;; esac
	cp "$f" "$v/query-core/"
done
