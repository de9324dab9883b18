#!/usr/bin/env bash
# The Quickstart: a real llama-server with a model, and the gateway on examples/ in front.
#   MODEL=/path/to/model.gguf   serve that model instead of the generated tiny one
#   PORT=8000 LLAMA_PORT=8081   where the gateway and llama-server listen
#   SMOKE=1                     only check that it works: one chat request, then stop
set -euo pipefail
cd "$(dirname "$0")/.."
# Keep the current directory off sys.path: its `operator` folder would shadow the stdlib.
export PYTHONSAFEPATH=1
PY=$(hack/venv.sh)
cache=${LLMROUTER_CACHE:-$HOME/.cache/llmrouter}
port=${PORT:-8000}
llama_port=${LLAMA_PORT:-8081}

server=$(hack/build-llama-server.sh)
if [ -n "${MODEL:-}" ]; then
  model=$MODEL
  [ -f "$model" ] || { echo "MODEL=$model: no such file" >&2; exit 1; }
else
  model=$cache/models/tiny-llama.gguf
  if [ ! -f "$model" ]; then
    mkdir -p "$(dirname "$model")"
    vocab=$(hack/build-llama-server.sh --print-vocab-dir)/ggml-vocab-llama-spm.gguf
    "$PY" hack/tiny_gguf.py --vocab "$vocab" --out "$model.tmp" && mv "$model.tmp" "$model"
  fi
fi

work=$(mktemp -d)
pids=()
cleanup() {
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ]; then
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  rm -rf "$work"
  echo "stopped" >&2
}
trap cleanup EXIT INT TERM

wait_for() {  # URL WHAT LOG
  for _ in $(seq 1 600); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$2 did not come up; its log:" >&2; tail -20 "$3" >&2; exit 1
}

key=$("$PY" -c 'from llmrouter.operator.apikeys import generate_api_key; print(generate_api_key())')
printf 'acme:\n  ci-bot: %s\n' "$key" > "$work/keys.yaml"

echo "starting llama-server on 127.0.0.1:$llama_port with $model" >&2
"$server" -m "$model" --host 127.0.0.1 --port "$llama_port" --ctx-size 2048 --parallel 4 \
  --metrics > "$work/llama-server.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$llama_port/health" llama-server "$work/llama-server.log"

echo "starting the gateway on http://127.0.0.1:$port" >&2
"$PY" -m llmrouter serve -f examples/ --keys-file "$work/keys.yaml" --port "$port" \
  --endpoint "llama-local=http://127.0.0.1:$llama_port/v1" > "$work/gateway.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$port/readyz" gateway "$work/gateway.log"

cat <<EOF2

llmrouter is serving examples/ on http://127.0.0.1:$port (tenant acme, key ci-bot).

  curl http://127.0.0.1:$port/v1/chat/completions \\
    -H 'Authorization: Bearer $key' -H 'Content-Type: application/json' \\
    -d '{"model": "chat", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 32}'

  python3 - <<'PY'
  from openai import OpenAI
  client = OpenAI(base_url="http://127.0.0.1:$port/v1", api_key="$key")
  reply = client.chat.completions.create(model="chat", max_tokens=32,
      messages=[{"role": "user", "content": "Hello!"}])
  print(reply.choices[0].message.content, reply.usage)
  PY

Logs: $work/gateway.log, $work/llama-server.log. Ctrl-C stops both.
EOF2
if [ -n "${SMOKE:-}" ]; then
  curl -fsS "http://127.0.0.1:$port/v1/chat/completions" \
    -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
    -d '{"model": "chat", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8}'
  echo
  exit 0
fi
tail -f "$work/gateway.log" &
pids+=($!)
wait -n "${pids[0]}" "${pids[1]}"
