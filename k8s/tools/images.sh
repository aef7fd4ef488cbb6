#!/usr/bin/env bash
# Build the five images from their Dockerfiles with podman, unchanged (the three services' from
# services/Dockerfile with SERVICE=<name>), and prove them: each image's unpacked size (printed,
# against the < 100 MB promise), its user (non-root), and a container started from it with a
# read-only root filesystem, as a non-root user, with no capabilities: the gateway answers
# /healthz, the others their --help (they need PostgreSQL and Valkey to serve). Run by
# `make images` (README "Kubernetes" > "Images").
#
# No public container registry is reachable from our machines, so the three images the
# Dockerfiles start FROM are stand-ins assembled here from the same sources, under the same names
# (podman then builds with --pull=never):
#   debian:bookworm-slim                         debootstrap --variant=minbase bookworm
#   gcr.io/distroless/python3-debian12:nonroot   the Debian 12 packages distroless builds that
#                                                image from (as k8s/tools/image-sizes.sh), users
#                                                root/nobody/nonroot, USER 65532
#   ghcr.io/astral-sh/uv:<UV_VERSION>            the uv binary of the same release (PyPI), at /uv
# Each stand-in is labelled portico.dev/stand-in=true. The base's size is reported separately:
# the distroless image itself is about as large (README "Images").
#
# Needs root (rootful podman), Debian 12, and network access to the Debian and PyPI mirrors
# from build containers (--network host). Environment: UV (uv binary), UV_VERSION, OUT (a JSON
# report), IMAGES (subset, e.g. "gateway users"), LIMIT_MB (default 100).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
UV=${UV:?set UV to the uv binary}
UV_VERSION=${UV_VERSION:?set UV_VERSION}
LIMIT_MB=${LIMIT_MB:-100}
OUT=${OUT:-$ROOT/.tools/images/report.json}
WORK=${WORK:-$ROOT/.tools/images}
export CONTAINERS_CONF=$ROOT/k8s/tools/images/containers.conf
PODMAN=(podman)
RUN=("${PODMAN[@]}" run --rm --runtime runc)
declare -A DOCKERFILE=(
  [gateway]=gateway/Dockerfile [users]=services/Dockerfile [auth]=services/Dockerfile
  [audit]=services/Dockerfile [migrations]=migrations/Dockerfile
)
declare -A COMMAND=(
  [gateway]=portico-gateway [users]=portico-users [auth]=portico-auth [audit]=portico-audit
  [migrations]=portico-migrate
)
read -r -a SELECTED <<< "${IMAGES:-gateway users auth audit migrations}"
mkdir -p "$WORK"

log() { printf '== %s\n' "$*" >&2; }
have() { "${PODMAN[@]}" image exists "$1"; }
# Apparent size of an image's root filesystem in MiB, from the image itself (mounted read-only).
size_mib() {
  local mnt
  mnt=$("${PODMAN[@]}" image mount "$1")
  du -s --apparent-size --block-size=1 "$mnt" | awk '{printf "%.1f", $1 / 1048576}'
  "${PODMAN[@]}" image unmount "$1" >/dev/null
}

# ------------------------------------------------------------------ stand-in bases
stand_in() {  # name rootfs-dir [--change ...]
  local name=$1 dir=$2
  shift 2
  tar -C "$dir" --numeric-owner --one-file-system -cf - . \
    | "${PODMAN[@]}" import --change "LABEL portico.dev/stand-in=true" "$@" - "$name" >/dev/null
}

if ! have docker.io/library/debian:bookworm-slim; then
  log "stand-in debian:bookworm-slim (debootstrap minbase)"
  rm -rf "$WORK/bookworm"
  debootstrap --variant=minbase bookworm "$WORK/bookworm" http://deb.debian.org/debian >"$WORK/debootstrap.log"
  rm -rf "$WORK/bookworm"/var/cache/apt/archives/*.deb "$WORK/bookworm"/var/lib/apt/lists/*
  # The build host's trust store: where package mirrors are reached through a TLS-inspecting
  # proxy, uv in the build stage must trust its CA (uv reads SSL_CERT_FILE). Build stage only:
  # nothing of it reaches a runtime image.
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$WORK/bookworm/etc/ssl/certs/build-host.crt"
  stand_in docker.io/library/debian:bookworm-slim "$WORK/bookworm" --change 'CMD ["bash"]' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/build-host.crt'
  rm -rf "$WORK/bookworm"
fi

DISTROLESS=gcr.io/distroless/python3-debian12:nonroot
if ! have "$DISTROLESS"; then
  log "stand-in $DISTROLESS (the Debian 12 packages distroless is built from)"
  rm -rf "$WORK/distroless" "$WORK/debs" && mkdir -p "$WORK/distroless" "$WORK/debs"
  # The package list of k8s/tools/image-sizes.sh (one list for both).
  eval "$(sed -n '/^PACKAGES=(/,/^)/p' "$ROOT/k8s/tools/image-sizes.sh")"
  (cd "$WORK/debs" && apt-get download "${PACKAGES[@]}" >/dev/null)
  for deb in "$WORK"/debs/*.deb; do dpkg -x "$deb" "$WORK/distroless"; done
  d=$WORK/distroless
  mkdir -p "$d/tmp" "$d/home/nonroot" "$d/etc/ssl/certs"
  chmod 1777 "$d/tmp"
  chown 65532:65532 "$d/home/nonroot"
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' > "$d/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'tty:x:5:' 'staff:x:50:' 'nonroot:x:65532:' > "$d/etc/group"
  cat "$d"/usr/share/ca-certificates/mozilla/*.crt > "$d/etc/ssl/certs/ca-certificates.crt"
  ln -sf python3.11 "$d/usr/bin/python3"
  rm -rf "$d/usr/share/doc" "$d/usr/share/man" "$d/usr/share/lintian"
  stand_in "$DISTROLESS" "$d" --change 'USER 65532' --change 'WORKDIR /home/nonroot' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENTRYPOINT ["/usr/bin/python3.11"]'
  rm -rf "$d" "$WORK/debs"
fi

UV_IMAGE=ghcr.io/astral-sh/uv:$UV_VERSION
if ! have "$UV_IMAGE"; then
  log "stand-in $UV_IMAGE (uv $("$UV" --version | awk '{print $2}') from PyPI)"
  rm -rf "$WORK/uv" && mkdir -p "$WORK/uv"
  install -m 0755 "$UV" "$WORK/uv/uv"
  stand_in "$UV_IMAGE" "$WORK/uv" --change 'ENTRYPOINT ["/uv"]'
  rm -rf "$WORK/uv"
fi
base_mib=$(size_mib "$DISTROLESS")

# ------------------------------------------------------------------ build, measure, run
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
results=()
failed=0
for image in "${SELECTED[@]}"; do
  tag="localhost/portico/$image:local"
  log "build $image (${DOCKERFILE[$image]})"
  start=$(date +%s)
  # --no-cache for the application stages would re-download every wheel; uv's cache mount keeps
  # that cheap, and buildah's layer cache does not notice .dockerignore changes: build fresh.
  # SERVICE names the service of services/Dockerfile; the other Dockerfiles do not read it.
  "${PODMAN[@]}" build --quiet --format docker --pull=never --network host --no-cache \
    --build-arg "SERVICE=$image" --build-arg VERSION=local --build-arg "REVISION=$revision" \
    -f "${DOCKERFILE[$image]}" -t "$tag" . >/dev/null
  seconds=$(( $(date +%s) - start ))
  total=$(size_mib "$tag")
  app=$(awk -v t="$total" -v b="$base_mib" 'BEGIN {printf "%.1f", t - b}')
  user=$("${PODMAN[@]}" image inspect --format '{{.Config.User}}' "$tag")
  digest=$("${PODMAN[@]}" image inspect --format '{{.Digest}}' "$tag")
  # Started as the image's user, read-only root filesystem, no capabilities, no new privileges.
  hardening=(--read-only --cap-drop ALL --security-opt no-new-privileges --network host)
  check=""
  if [[ $image == gateway ]]; then
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cid=$("${PODMAN[@]}" run -d --runtime runc "${hardening[@]}" -e GATEWAY_HOST=127.0.0.1 \
      -e "GATEWAY_PORT=$port" "$tag")
    ok=""
    for _ in $(seq 1 60); do
      if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then ok=1; break; fi
      sleep 1
    done
    uid=$("${PODMAN[@]}" exec "$cid" /app/.venv/bin/python -c 'import os; print(os.getuid())' || echo "?")
    write=$("${PODMAN[@]}" exec "$cid" /app/.venv/bin/python -c \
      'import os
try:
    open("/app/probe", "w")
    print("writable")
except OSError:
    print("read-only")' || echo "?")
    "${PODMAN[@]}" logs "$cid" > "$WORK/$image.log" 2>&1 || true
    "${PODMAN[@]}" rm -f "$cid" >/dev/null
    [[ -n $ok ]] && check="GET /healthz 200" || check="no /healthz answer (see $WORK/$image.log)"
  else
    out=$("${RUN[@]}" "${hardening[@]}" "$tag" --help 2>&1 | head -1 || true)
    uid=$("${RUN[@]}" "${hardening[@]}" --entrypoint /app/.venv/bin/python "$tag" -c 'import os; print(os.getuid())' || echo "?")
    write=$("${RUN[@]}" "${hardening[@]}" --entrypoint /app/.venv/bin/python "$tag" -c \
      'import os
try:
    open("/app/probe", "w")
    print("writable")
except OSError:
    print("read-only")' || echo "?")
    [[ $out == usage:* ]] && check="${COMMAND[$image]} --help" || check="--help failed: $out"
    if [[ $image == migrations ]]; then  # the SQL files reached the image (build context rules)
      sql=$("${RUN[@]}" "${hardening[@]}" --entrypoint /app/.venv/bin/python "$tag" -c \
        'import pathlib; print(len(list(pathlib.Path("/app/migrations").glob("*/*.sql"))))' || echo 0)
      expected=$(find migrations -mindepth 2 -maxdepth 2 -name '*.sql' | wc -l)
      [[ $sql == "$expected" ]] || check="$sql of $expected SQL files in the image"
    fi
  fi
  verdict=ok
  awk -v t="$total" -v l="$LIMIT_MB" 'BEGIN {exit !(t < l)}' || verdict="over ${LIMIT_MB} MB"
  [[ $uid != 0 && $user != "" && $user != root && $user != 0* ]] || verdict="runs as root"
  [[ $write == read-only ]] || verdict="root filesystem writable"
  [[ $check == "GET /healthz 200" || $check == *" --help" ]] || verdict="$check"
  [[ $verdict == ok ]] || failed=1
  printf '%-11s %8s MB %8s MB  user %-12s uid %-6s %-10s %-24s %4ss  %s\n' "$image" "$total" "$app" \
    "$user" "$uid" "$write" "$check" "$seconds" "$verdict"
  results+=("{\"image\": \"$image\", \"unpacked_mib\": $total, \"app_layers_mib\": $app, \"user\": \"$user\", \"uid\": $uid, \"root_fs\": \"$write\", \"check\": \"$check\", \"build_seconds\": $seconds, \"digest\": \"$digest\", \"verdict\": \"$verdict\"}")
done
printf 'base (%s): %s MB unpacked\n' "$DISTROLESS" "$base_mib"
mkdir -p "$(dirname "$OUT")"
( IFS=,; printf '{"limit_mib": %s, "base_mib": %s, "revision": "%s", "images": [%s]}\n' \
  "$LIMIT_MB" "$base_mib" "$revision" "${results[*]}" ) > "$OUT"
exit $failed
