#!/usr/bin/env bash
# Build the five images from their Dockerfiles with podman, unchanged (the three services' from
# services/Dockerfile with SERVICE=<name>), and prove them: each image's unpacked size (printed
# in MB = 10^6 bytes and MiB; fails at LIMIT_MB, the < 100 MB promise), its user (non-root), and
# containers started from it with a read-only root filesystem, as its non-root user, with no
# capabilities: every module of Portico's packages imports (the pruned standard library and the
# bytecode-only venv hold what the code needs; the CPU time it takes is printed), the gateway
# answers /healthz (time to ready printed) and its HEALTHCHECK reports healthy, the others print
# their --help. Then the five serve together (k8s/tools/image_stack.py: `portico-dev --images`
# against embedded PostgreSQL and Valkey): the migrations image applies the schema, each service
# answers its gRPC health check SERVING, and a client signs up, logs in, reads itself and finds
# the audit event, all through the containers. Run by `make images`, which `make test` runs
# (docs/kubernetes.md, "Images").
#
# No public container registry is reachable from our machines, so the three images the
# Dockerfiles start FROM are stand-ins assembled here from the same sources, under the same names
# (podman then builds with --pull=never):
#   debian:bookworm-slim                         debootstrap --variant=minbase bookworm
#   gcr.io/distroless/static-debian12:nonroot    the Debian 12 packages distroless builds that
#                                                image from (base-files, netbase, tzdata, the CA
#                                                bundle), users root/nobody/nonroot, USER 65532
#   ghcr.io/astral-sh/uv:<UV_VERSION>            the uv binary of the same release (PyPI), at /uv
# Each stand-in is labelled portico.dev/stand-in=true. The base's size is reported separately
# (and is part of each image's size); the distroless image itself is about as large.
#
# Needs root (rootful podman), Debian 12, and network access to the Debian and PyPI mirrors
# from build containers (--network host). Environment: UV (uv binary), UV_VERSION, OUT (a JSON
# report), IMAGES (subset, e.g. "gateway users"; the stack is served only with all five),
# LIMIT_MB (default 100, in MB: 10^6 bytes), PYTHON (the project's virtualenv Python).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
UV=${UV:?set UV to the uv binary}
UV_VERSION=${UV_VERSION:?set UV_VERSION}
LIMIT_MB=${LIMIT_MB:-100}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
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
declare -A PACKAGE=(
  [gateway]=portico_gateway [users]=portico_users [auth]=portico_auth [audit]=portico_audit
  [migrations]=portico_migrations
)
read -r -a SELECTED <<< "${IMAGES:-gateway users auth audit migrations}"
mkdir -p "$WORK"

log() { printf '== %s\n' "$*" >&2; }
have() { "${PODMAN[@]}" image exists "$1"; }
# Apparent size of an image's root filesystem in bytes, from the image itself (mounted read-only).
size_bytes() {
  local mnt
  mnt=$("${PODMAN[@]}" image mount "$1")
  du -s --apparent-size --block-size=1 "$mnt" | cut -f1
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

DISTROLESS=gcr.io/distroless/static-debian12:nonroot
if ! have "$DISTROLESS"; then
  log "stand-in $DISTROLESS (the Debian 12 packages distroless static is built from)"
  rm -rf "$WORK/distroless" "$WORK/debs" && mkdir -p "$WORK/distroless" "$WORK/debs"
  (cd "$WORK/debs" && apt-get download base-files netbase tzdata ca-certificates >/dev/null)
  for deb in "$WORK"/debs/*.deb; do dpkg -x "$deb" "$WORK/distroless"; done
  d=$WORK/distroless
  mkdir -p "$d/tmp" "$d/home/nonroot" "$d/etc/ssl/certs"
  chmod 1777 "$d/tmp"
  chown 65532:65532 "$d/home/nonroot"
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' > "$d/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'tty:x:5:' 'staff:x:50:' 'nonroot:x:65532:' > "$d/etc/group"
  cat "$d"/usr/share/ca-certificates/mozilla/*.crt > "$d/etc/ssl/certs/ca-certificates.crt"
  # As distroless: of the documentation, the copyright files only; no maintainer scripts.
  find "$d/usr/share/doc" -type f ! -name copyright -delete
  rm -rf "$d/usr/share/man" "$d/usr/share/lintian" "$d/usr/sbin" "$d/usr/share/bug"
  stand_in "$DISTROLESS" "$d" --change 'USER 65532' --change 'WORKDIR /home/nonroot' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt'
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
base_bytes=$(size_bytes "$DISTROLESS")

# Every module of the image's own package (and so all they import: portico_common, the generated
# code, the libraries), imported as the image's user on its read-only root: proves the pruned
# standard library and the bytecode-only venv hold what the code needs. A package's __main__ is
# left out (importing it runs it). Prints the count and the CPU seconds the imports took (the
# bulk of a start: the bytecode policy's effect).
# shellcheck disable=SC2016 # Python source, not shell
IMPORT_ALL='
import importlib, pkgutil, sys, time
package = importlib.import_module(sys.argv[1])
names = [m.name for m in pkgutil.walk_packages(package.__path__, sys.argv[1] + ".")]
for name in names:
    if not name.endswith(".__main__"):
        importlib.import_module(name)
print(f"{len(names)}/{time.process_time():.2f}s")'

# ------------------------------------------------------------------ build, measure, run
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
results=()
failed=0
printf '%-11s %6s %6s %7s  %-12s %-6s %-10s %-13s %-28s %6s  %s\n' image MB MiB app-MiB user uid \
  "root fs" "imports/cpu" started ready verdict
for image in "${SELECTED[@]}"; do
  tag="localhost/portico/$image:local"
  log "build $image (${DOCKERFILE[$image]})"
  start=$(date +%s)
  # Built fresh: buildah's layer cache does not notice .dockerignore changes (uv's cache mount
  # keeps the wheels). The image this tag named before is removed once the new one has it; the
  # stage images a build leaves go at the end (this runs in every `make test`, on machines that
  # are kept). Not --layers=false: buildah then deletes the stand-in base of `FROM … AS base`.
  # SERVICE names the service of services/Dockerfile; the other Dockerfiles do not read it.
  previous=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
  "${PODMAN[@]}" build --quiet --format docker --pull=never --network host --no-cache \
    --build-arg "SERVICE=$image" --build-arg VERSION=local --build-arg "REVISION=$revision" \
    -f "${DOCKERFILE[$image]}" -t "$tag" . >/dev/null
  if [[ -n $previous && $previous != $("${PODMAN[@]}" image inspect --format '{{.Id}}' "$tag") ]]; then
    "${PODMAN[@]}" rmi "$previous" >/dev/null 2>&1 || true  # still used by a container: kept
  fi
  seconds=$(( $(date +%s) - start ))
  bytes=$(size_bytes "$tag")
  mb=$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1e6}')
  mib=$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1048576}')
  app=$(awk -v t="$bytes" -v b="$base_bytes" 'BEGIN {printf "%.1f", (t - b) / 1048576}')
  user=$("${PODMAN[@]}" image inspect --format '{{.Config.User}}' "$tag")
  digest=$("${PODMAN[@]}" image inspect --format '{{.Digest}}' "$tag")
  # Started as the image's user, read-only root filesystem, no capabilities, no new privileges.
  hardening=(--read-only --cap-drop ALL --security-opt no-new-privileges)
  python=("${RUN[@]}" "${hardening[@]}" --network none --entrypoint /app/.venv/bin/python "$tag" -c)
  uid=$("${python[@]}" 'import os; print(os.getuid())' || echo "?")
  write=$("${python[@]}" 'import os
try:
    open("/app/probe", "w")
    print("writable")
except OSError:
    print("read-only")' || echo "?")
  imports=$("${python[@]}" "$IMPORT_ALL" "${PACKAGE[$image]}" 2>"$WORK/$image.imports.log" || echo failed)
  ready="-"
  if [[ $image == gateway ]]; then
    # Seconds from `podman run` returning (the process is started) to the first /healthz 200.
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cid=$("${PODMAN[@]}" run -d --runtime runc "${hardening[@]}" --network host -e GATEWAY_HOST=127.0.0.1 \
      -e "GATEWAY_PORT=$port" "$tag")
    t0=$(date +%s.%N)
    ok=""
    for _ in $(seq 1 600); do
      if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then ok=1; break; fi
      sleep 0.1
    done
    ready=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2fs", b - a}')
    "${PODMAN[@]}" logs "$cid" > "$WORK/$image.log" 2>&1 || true
    "${PODMAN[@]}" rm -f "$cid" >/dev/null
    # The image's own HEALTHCHECK (compose relies on it; it calls 127.0.0.1:8000, the image's
    # port): a second container with a network namespace of its own, checked as podman would.
    if [[ -n $ok ]]; then
      ok=""
      cid=$("${PODMAN[@]}" run -d --runtime runc "${hardening[@]}" --network none \
        -e GATEWAY_HOST=127.0.0.1 "$tag")
      for _ in $(seq 1 60); do
        if "${PODMAN[@]}" healthcheck run "$cid" >/dev/null 2>&1; then ok=1; break; fi
        sleep 1
      done
      "${PODMAN[@]}" rm -f "$cid" >/dev/null 2>&1
    fi
    [[ -n $ok ]] && check="GET /healthz 200, healthy" || check="no /healthz answer or unhealthy (see $WORK/$image.log)"
  else
    out=$("${RUN[@]}" "${hardening[@]}" --network none "$tag" --help 2>&1 | head -1 || true)
    [[ $out == usage:* ]] && check="${COMMAND[$image]} --help" || check="--help failed: $out"
    if [[ $image == migrations ]]; then  # the SQL files reached the image (build context rules)
      sql=$("${python[@]}" 'import pathlib; print(len(list(pathlib.Path("/app/migrations").glob("*/*.sql"))))' || echo 0)
      expected=$(find migrations -mindepth 2 -maxdepth 2 -name '*.sql' | wc -l)
      [[ $sql == "$expected" ]] || check="$sql of $expected SQL files in the image"
    fi
  fi
  verdict=ok
  awk -v b="$bytes" -v l="$LIMIT_MB" 'BEGIN {exit !(b < l * 1e6)}' || verdict="over ${LIMIT_MB} MB"
  [[ $uid != 0 && $user != "" && $user != root && $user != 0* ]] || verdict="runs as root"
  [[ $write == read-only ]] || verdict="root filesystem writable"
  [[ $imports =~ ^[0-9]+/[0-9.]+s$ ]] || verdict="an import failed (see $WORK/$image.imports.log)"
  [[ $check == "GET /healthz 200, healthy" || $check == *" --help" ]] || verdict="$check"
  [[ $verdict == ok ]] || failed=1
  printf '%-11s %6s %6s %7s  %-12s %-6s %-10s %-13s %-28s %6s  %s\n' "$image" "$mb" "$mib" "$app" \
    "$user" "$uid" "$write" "$imports" "$check" "$ready" "$verdict"
  results+=("{\"image\": \"$image\", \"unpacked_bytes\": $bytes, \"unpacked_mb\": $mb, \"unpacked_mib\": $mib, \"app_layers_mib\": $app, \"user\": \"$user\", \"uid\": \"$uid\", \"root_fs\": \"$write\", \"modules_imported\": \"$imports\", \"check\": \"$check\", \"ready\": \"$ready\", \"build_seconds\": $seconds, \"digest\": \"$digest\", \"verdict\": \"$verdict\"}")
done
# The five images serving together, as a client uses them (k8s/tools/image_stack.py).
stack='"not run (IMAGES is a subset)"'
all_five=1
for image in gateway users auth audit migrations; do
  [[ " ${SELECTED[*]} " == *" $image "* ]] || all_five=""
done
if [[ -n $all_five ]]; then
  log "serve the stack from the images"
  if "$PYTHON" k8s/tools/image_stack.py "localhost/portico/{name}:local" "$WORK/stack.log" \
    > "$WORK/stack.txt"; then stack='"ok"'; else stack='"failed"'; failed=1; fi
  printf 'stack from the images (log: %s):\n' "$WORK/stack.log"
  sed 's/^/  /' "$WORK/stack.txt"
fi
# Untagged stage images left by the builds above: every one descends from a stand-in, whose label
# it inherits; prune removes only those no container uses.
"${PODMAN[@]}" image prune -f --filter label=portico.dev/stand-in=true >/dev/null
printf 'base (%s): %s MB (%s MiB) unpacked; limit %s MB = %s bytes\n' "$DISTROLESS" \
  "$(awk -v b="$base_bytes" 'BEGIN {printf "%.1f", b / 1e6}')" \
  "$(awk -v b="$base_bytes" 'BEGIN {printf "%.1f", b / 1048576}')" "$LIMIT_MB" "$((LIMIT_MB * 1000000))"
mkdir -p "$(dirname "$OUT")"
( IFS=,; printf '{"limit_mb": %s, "base_bytes": %s, "revision": "%s", "stack": %s, "images": [%s]}\n' \
  "$LIMIT_MB" "$base_bytes" "$revision" "$stack" "${results[*]}" ) > "$OUT"
exit $failed
