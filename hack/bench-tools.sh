#!/usr/bin/env bash
# What hack/bench_compare.py runs: nginx and wrk (Debian), vegeta (Go module), LiteLLM's proxy in
# a virtualenv of its own, and what LiteLLM's database mode (hack/bench_litellm.py) needs:
# PostgreSQL (Debian), Node (Debian, if missing) and Prisma, all outside the repository.
# Installs what is missing; a second run only checks. (python -I: run from the repository, its
# operator/ folder would shadow the standard library.)
#
# Prisma: LiteLLM reaches Postgres through prisma-client-py, which runs Prisma's CLI (npm) to
# generate its client and spawns Prisma's native query-engine binary in each worker. Prisma
# serves that binary (and its schema engine) only from its own download host, which is not
# reachable here. So the query engine is a stand-in, $engine/query-engine: Prisma's WebAssembly
# build of the engine (npm: @prisma/query-engine-wasm) behind the native binary's HTTP API,
# served by Node over Prisma's pg driver adapter (hack/prisma-query-engine.mjs says how).
# Without a schema engine `prisma migrate` cannot run: hack/bench_litellm.py applies LiteLLM's
# migration SQL with psql and starts LiteLLM with DISABLE_SCHEMA_UPDATE=true. What the database
# mode needs at run time is written to $root/litellm-db.env.
#
# --smoke: only what `bench_compare.py --smoke` runs (nginx, wrk, vegeta), for the test suite.
set -euo pipefail
smoke=false
[ "${1:-}" = --smoke ] && smoke=true
here=$(cd "$(dirname "$0")" && pwd)
root=${LLMROUTER_CACHE:-$HOME/.cache/llmrouter}/bench
VEGETA_VERSION=${VEGETA_VERSION:-v12.12.0}
LITELLM_VERSION=${LITELLM_VERSION:-}
# LiteLLM's proxy is written against prisma-client-py 0.11: it swaps the engine in through
# Prisma._Prisma__engine, which 0.12 and later lack. prisma-client-py 0.11 drives Prisma CLI 5.4.2.
PRISMA_PY_VERSION=${PRISMA_PY_VERSION:-0.11.0}
PRISMA_CLI_VERSION=${PRISMA_CLI_VERSION:-5.4.2}
# The Wasm engine and schema tools are published per engine commit; 5.4.2 has no Wasm engine.
PRISMA_WASM_VERSION=${PRISMA_WASM_VERSION:-5.17.0-31.393aa359c9ad4a4bb28630fb5613f9c281cde053}
PG_NODE_VERSION=${PG_NODE_VERSION:-8.23.1}

pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
if ! $smoke; then
  [ -x "$(pg_bindir)/initdb" ] || missing+=(postgresql)
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [ ! -x "$root/bin/vegeta" ]; then
  # The module and build caches hack/build-kube.sh and hack/build-helm.sh fill, and this Go.
  cache=${LLMROUTER_CACHE:-$HOME/.cache/llmrouter}
  GOMODCACHE=$cache/go/mod GOCACHE=$cache/go/build GOTOOLCHAIN=local CGO_ENABLED=0 \
    GOBIN=$root/bin go install "github.com/tsenart/vegeta/v12@$VEGETA_VERSION"
fi
$smoke && exit 0
venv=$root/litellm-venv
if [ ! -x "$venv/bin/litellm" ]; then
  python3 -I -m venv "$venv"
  "$venv/bin/pip" install -q "litellm[proxy]${LITELLM_VERSION:+==$LITELLM_VERSION}" \
    "prisma==$PRISMA_PY_VERSION"
fi
if [ "$("$venv/bin/python" -I -c 'import importlib.metadata as m; print(m.version("prisma"))' \
  2>/dev/null)" != "$PRISMA_PY_VERSION" ]; then
  # `prisma generate` writes into the package: a version change starts from a clean one.
  site=$("$venv/bin/python" -I -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  "$venv/bin/pip" uninstall -q -y prisma 2>/dev/null || true
  rm -rf "$site/prisma" "$venv/.prisma-generated"
  "$venv/bin/pip" install -q "prisma==$PRISMA_PY_VERSION"
fi

# Prisma's CLI and the query-engine stand-in, in a folder named after all that it holds.
# hack/prisma-query-engine.mjs: Prisma's Wasm query engine behind the native binary's API.
QE_MJS=$here/prisma-query-engine.mjs
shim_sum=$(sha256sum <"$QE_MJS" | cut -c1-12)
engine=$root/prisma-$PRISMA_CLI_VERSION-wasm-${PRISMA_WASM_VERSION%%-*}-$shim_sum
if [ ! -x "$engine/query-engine" ]; then
  mkdir -p "$root"
  tmp=$(mktemp -d "$root/.prisma.XXXXXX")
  # prisma-client-py runs the CLI from node_modules/prisma/build/index.js under
  # PRISMA_BINARY_CACHE_DIR. --ignore-scripts: @prisma/engines' postinstall would try the
  # download host.
  printf '{"name": "prisma-binaries", "private": true}\n' >"$tmp/package.json"
  npm install --prefix "$tmp" --no-audit --no-fund --ignore-scripts --loglevel=error \
    "prisma@$PRISMA_CLI_VERSION" \
    "@prisma/query-engine-wasm@$PRISMA_WASM_VERSION" \
    "@prisma/prisma-schema-wasm@$PRISMA_WASM_VERSION" \
    "@prisma/adapter-pg@${PRISMA_WASM_VERSION%%-*}" \
    "@prisma/driver-adapter-utils@${PRISMA_WASM_VERSION%%-*}" \
    "pg@$PG_NODE_VERSION" >/dev/null
  cp "$QE_MJS" "$tmp/qe.mjs"
  node=$(command -v node)
  cat >"$tmp/query-engine" <<SH
#!/bin/sh
# Prisma's query engine: its Wasm build behind the native binary's HTTP API (see qe.mjs).
case "\$1" in --version|-V) echo "query-engine ${PRISMA_WASM_VERSION##*.}"; exit 0;; esac
exec "$node" "\$(dirname "\$0")/qe.mjs" "\$@"
SH
  cat >"$tmp/schema-engine" <<SH
#!/bin/sh
# No schema engine (Prisma serves it only from its download host): hack/bench_litellm.py
# applies LiteLLM's migrations with psql, and \`prisma migrate\` fails at once.
case "\$1" in --version|-V) echo "schema-engine-cli ${PRISMA_WASM_VERSION##*.}"; exit 0;; esac
echo "schema-engine: not available here (see hack/bench-tools.sh)" >&2
exit 1
SH
  chmod +x "$tmp/query-engine" "$tmp/schema-engine"
  rm -rf "$engine" && mv "$tmp" "$engine"
fi

# prisma-client-py's client for LiteLLM's schema, generated into the virtualenv's package.
package_dir() {
  "$venv/bin/python" -I -c \
    "import importlib.util as u; print(u.find_spec('$1').submodule_search_locations[0])"
}
litellm_dir=$(package_dir litellm)
schema=$litellm_dir/proxy/schema.prisma
generated="$PRISMA_PY_VERSION $(sha256sum <"$schema" | cut -c1-16) $engine"
if [ "$(cat "$venv/.prisma-generated" 2>/dev/null)" != "$generated" ]; then
  (cd "$litellm_dir/proxy" && PATH="$venv/bin:$PATH" PRISMA_BINARY_CACHE_DIR="$engine" \
    PRISMA_QUERY_ENGINE_BINARY="$engine/query-engine" \
    PRISMA_SCHEMA_ENGINE_BINARY="$engine/schema-engine" PRISMA_HIDE_UPDATE_MESSAGE=1 \
    "$venv/bin/python" -I -m prisma generate --schema schema.prisma >/dev/null)
  QUERY_ENGINE_SHIM_CACHE="$engine" node "$engine/qe.mjs" --input-types "$schema"
  printf '%s\n' "$generated" >"$venv/.prisma-generated"
fi
cat >"$root/litellm-db.env.tmp" <<ENV
PG_BINDIR=$(pg_bindir)
LITELLM_MIGRATIONS=$(package_dir litellm_proxy_extras)/migrations
PRISMA_BINARY_CACHE_DIR=$engine
PRISMA_QUERY_ENGINE_BINARY=$engine/query-engine
PRISMA_SCHEMA_ENGINE_BINARY=$engine/schema-engine
QUERY_ENGINE_SHIM_CACHE=$engine
ENV
mv "$root/litellm-db.env.tmp" "$root/litellm-db.env"
"$venv/bin/pip" show litellm | sed -n 2p
