#!/usr/bin/env bash
# Estimate the five images' sizes without a Docker engine (docs/kubernetes.md, "Images"):
#   * the runtime base: the Debian 12 packages gcr.io/distroless/python3-debian12 is built from
#     (its base, cc and python3 layers), downloaded with apt-get and unpacked;
#   * each image's virtualenv, built the way its Dockerfile builds it: Debian 12's
#     /usr/bin/python3.11, `uv sync --frozen --no-dev --no-editable --package X` with bytecode,
#     then stripped and without type stubs.
# Prints unpacked sizes and gzip sizes (a registry stores and a node pulls each layer gzipped).
# Needs Debian 12 (python3.11 in /usr/bin), apt-get, binutils, and uv (`make sync` installs it).
set -euo pipefail
cd "$(dirname "$0")/../.."
UV=${UV:-$(command -v uv || echo .tools/uv/bin/uv)}
PACKAGES=(
  base-files netbase tzdata ca-certificates libc6 libssl3                     # distroless base
  libgcc-s1 libgomp1 libstdc++6                                               # cc
  libbz2-1.0 libdb5.3 libexpat1 liblzma5 libsqlite3-0 libuuid1 libncursesw6   # python3
  libtinfo6 python3-distutils zlib1g libcom-err2 libcrypt1 libgssapi-krb5-2 libk5crypto3
  libkeyutils1 libkrb5-3 libkrb5support0 libnsl2 libreadline8 libtirpc3 libffi8
  libpython3.11-minimal libpython3.11-stdlib python3.11-minimal
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mb() { du -sm "$1" | cut -f1; }
gz() { tar -C "$1" -cf - . | gzip -6 | wc -c | awk '{printf "%.1f", $1 / 1048576}'; }

mkdir -p "$work/debs" "$work/base"
(cd "$work/debs" && apt-get download "${PACKAGES[@]}" >/dev/null 2>&1)
for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$work/base"; done
base_mb=$(mb "$work/base")
base_gz=$(gz "$work/base")
echo "runtime base (distroless python3-debian12 packages): ${base_mb} MB unpacked, ${base_gz} MB gzip"
printf '%-20s %12s %12s %14s %12s\n' package "venv synced" "venv shipped" "image unpacked" "image gzip"
for package in portico-gateway portico-users portico-auth portico-audit portico-migrations; do
  venv="$work/$package"
  UV_PROJECT_ENVIRONMENT="$venv" UV_PYTHON=/usr/bin/python3.11 UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \
    "$UV" sync --frozen --no-dev --no-editable --package "$package" --quiet
  synced=$(mb "$venv")
  find "$venv" -name '*.so' -exec strip --strip-unneeded {} +
  find "$venv" -name '*.pyi' -delete
  shipped=$(mb "$venv")
  venv_gz=$(gz "$venv")
  printf '%-20s %9s MB %9s MB %11s MB %9s MB\n' "$package" "$synced" "$shipped" \
    "$((base_mb + shipped))" "$(awk -v a="$base_gz" -v b="$venv_gz" 'BEGIN {printf "%.1f", a + b}')"
done
