#!/usr/bin/env bash
# Builds the llmrouter OCI image without a container engine: Debian's python3 and the
# libraries it needs, unpacked by mmdebstrap (no shell, no package manager run in it), the
# project's wheel and its dependencies installed beside it, bytecode compiled ahead (the root
# file system may be read-only), then packed by hack/oci_image.py into an OCI image layout
# with a CycloneDX SBOM. The result goes into a cache outside the repository keyed by a hash
# of the inputs; a warm run returns at once. Prints the result's folder:
#   oci/            the OCI image layout (tag = the version), for skopeo, crane, umoci
#   sbom.cdx.json   Debian and Python packages in the image (also at
#                   /usr/share/doc/llmrouter/sbom.cdx.json inside it)
# Needs root (mmdebstrap's root mode, chroot-free otherwise), mmdebstrap and Python 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
SUITE=bookworm
root=${LLMROUTER_CACHE:-$HOME/.cache/llmrouter}

# The inputs: what goes into the wheel, and this recipe.
inputs=(pyproject.toml README.md hack/build-image.sh hack/oci_image.py hack/image)
mapfile -t files < <(find "${inputs[@]}" llmrouter operator gateway -type f \
  ! -path '*/__pycache__/*' ! -name '*.pyc' | LC_ALL=C sort)
# Every file's mtime and the image's creation time: the last commit that changed an input.
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct -- "${inputs[@]}" llmrouter operator gateway 2>/dev/null || true)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}
key=$({
  echo "suite=$SUITE epoch=$SOURCE_DATE_EPOCH"
  for f in "${files[@]}"; do printf '%s %s\n' "$(sha256sum <"$f" | cut -c1-64)" "$f"; done
} | sha256sum | cut -c1-16)
out=$root/image/$key
if [ -f "$out/DONE" ]; then echo "$out"; exit 0; fi

command -v mmdebstrap >/dev/null || { echo "mmdebstrap is needed (apt-get install mmdebstrap)" >&2; exit 1; }
"$PY" -I -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || { echo "$PY is not Python 3.11, the image's: its wheels would not fit" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "building the image needs root (mmdebstrap's root mode)" >&2; exit 1; }
mkdir -p "$root/image"
exec 9>"$root/image/.lock"
flock 9
if [ -f "$out/DONE" ]; then echo "$out"; exit 0; fi

work=$(mktemp -d "$root/image/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
timed() { # timed NAME COMMAND...: runs it, logs how long it took
  local start=$SECONDS
  "${@:2}" >&2
  echo "$1: $((SECONDS - start)) s" >&2
}

# The wheel is built from a copy of the inputs, so nothing else in the tree counts.
mkdir "$work/src"
cp --parents "${files[@]}" "$work/src/"
timed "wheels (llmrouter and its dependencies)" \
  "$PY" -I -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$work/wheels" "$work/src"

rootfs=$work/rootfs
mirror="deb http://deb.debian.org/debian $SUITE main"
security="deb http://deb.debian.org/debian-security $SUITE-security main"
# extract: the packages' files only, no maintainer scripts; the hook keeps their control
# data for the dpkg status database, which the extract variant leaves empty.
timed "mmdebstrap $SUITE python3" mmdebstrap --quiet --variant=extract \
  --include=python3,ca-certificates,libstdc++6,libgcc-s1 \
  --extract-hook="for d in \"\$1\"/var/cache/apt/archives/*.deb; do dpkg-deb -f \"\$d\"; echo; done >$work/control" \
  "$SUITE" "$rootfs" "$mirror" "$security"
"$PY" -I hack/oci_image.py dpkg-status "$work/control" "$rootfs"

site=$rootfs/usr/lib/python3/dist-packages
timed "pip install into the root file system" "$PY" -I -m pip install --quiet \
  --disable-pip-version-check --no-index --find-links "$work/wheels" --no-compile \
  --target "$site" llmrouter
rm -rf "$site/bin" # console scripts naming this machine's Python
install -D -m 0755 hack/image/llmrouter "$rootfs/usr/local/bin/llmrouter"
install -m 0644 hack/image/passwd hack/image/group "$rootfs/etc/"
install -d -m 0755 -o 65532 -g 65532 "$rootfs/home/llmrouter"
# Mount points a container runtime fills (/tmp stays writable where the root is not).
install -d -m 0755 "$rootfs"/{proc,sys,dev,run}
install -d -m 1777 "$rootfs/tmp"
# ca-certificates' own script would make the bundle; it is not run by the extract variant.
cat "$rootfs"/usr/share/ca-certificates/*/*.crt >"$rootfs/etc/ssl/certs/ca-certificates.crt"
rm -rf "$rootfs"/usr/share/{man,info,lintian,linda} "$rootfs"/var/cache/* "$rootfs"/var/log/*
find "$rootfs/usr/share/doc" -type f ! -name copyright -delete
# Bytecode checked by source hash, not mtime: the same bytes on every build, and valid on a
# read-only file system. Paths inside it are the image's, not this build folder's.
timed "compileall" "$PY" -I -m compileall -q -j 0 --invalidation-mode unchecked-hash \
  -s "$rootfs" -p / "$rootfs/usr/lib/python3.11" "$site"

mkdir -p "$rootfs/usr/share/doc/llmrouter"
"$PY" -I hack/oci_image.py sbom "$rootfs" "$rootfs/usr/share/doc/llmrouter/sbom.cdx.json"
mkdir "$work/result"
cp "$rootfs/usr/share/doc/llmrouter/sbom.cdx.json" "$work/result/"
timed "pack" "$PY" -I hack/oci_image.py pack "$rootfs" "$work/result/oci"
touch "$work/result/DONE"
rm -rf "$out"
mv "$work/result" "$out"
# Keep the three newest images: each change to the sources makes another.
find "$root/image" -mindepth 1 -maxdepth 1 -type d -regex '.*/[0-9a-f]\{16\}' -printf '%T@ %p\n' |
  sort -rn | tail -n +4 | cut -d' ' -f2- | xargs -r rm -rf
echo "image $(du -sh "$out/oci" | cut -f1) (compressed) in $out" >&2
echo "$out"
