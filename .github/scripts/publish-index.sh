#!/usr/bin/env bash
# Join the per-platform images pushed by digest into one multi-arch index, tag it (the tag only
# keeps the registry from collecting it: everything downstream uses the digest) and print
# `ref=<name>@<digest>` and `digest=<digest>` to $GITHUB_OUTPUT (or stdout).
#   publish-index.sh NAME TAG DIGEST_DIR
# DIGEST_DIR holds one empty file per platform image, named by its sha256 hex digest.
set -euo pipefail
name=$1 tag=$2 dir=$3
sources=()
for file in "$dir"/*; do
  hex=$(basename "$file")
  [[ $hex =~ ^[0-9a-f]{64}$ ]] || { echo "publish-index: $file is not a sha256 digest" >&2; exit 2; }
  sources+=("${name}@sha256:${hex}")
done
(( ${#sources[@]} >= 2 )) || { echo "publish-index: expected one digest per platform, got ${#sources[@]}" >&2; exit 2; }
docker buildx imagetools create --tag "${name}:${tag}" "${sources[@]}"
digest=$(docker buildx imagetools inspect "${name}:${tag}" --format '{{ json .Manifest }}' \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["digest"])')
[[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "publish-index: bad index digest '$digest'" >&2; exit 2; }
{
  echo "ref=${name}@${digest}"
  echo "digest=${digest}"
} >> "${GITHUB_OUTPUT:-/dev/stdout}"
