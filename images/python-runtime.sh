#!/usr/bin/env bash
# The Python runtime of every Portico image, assembled in a Dockerfile's build stage (Debian 12
# with the python3.11 package and binutils) for a runtime stage FROM
# gcr.io/distroless/static-debian12:nonroot (users, CA bundle, tzdata; no libc, no Python).
# docs/kubernetes.md, "Images" says why and what each step saves.
#
#   python-runtime.sh DEST VENV
#
# DEST receives, at the paths Debian has them:
#   * /usr/bin/python3.11 and its standard library, less what a server never imports (tests,
#     GUI, REPL, packaging tools, sqlite/dbm/curses, the C test modules), as bytecode only;
#   * every shared library that the interpreter, the standard library's extension modules and
#     VENV's extension modules load (ldd closure: glibc, libssl3, libstdc++, ...), nothing else
#     (no gconv modules, no libc binaries);
#   * the dpkg status entries of the packages those files come from, for image scanners.
# VENV (the uv-synced virtualenv whose interpreter is /usr/bin/python3.11) is reduced in place:
# bytecode only, no extension-module sources (.pyx/.pxd/.c/.h), no type stubs, stripped
# extension modules. dist-info directories stay whole: importlib.metadata, entry points, license
# texts and the SBOMs that image scanners read.
#
# Bytecode only: the root filesystem is read-only in the cluster, so without bytecode every start
# would compile every module; with sources *and* bytecode, both would ship. Compiled with
# unchecked-hash invalidation (reproducible: no timestamps) and the legacy layout (`compileall
# -b`: module.pyc beside where module.py was), which CPython's sourceless loader imports.
set -euo pipefail
DEST=${1:?usage: python-runtime.sh DEST VENV}
VENV=${2:?usage: python-runtime.sh DEST VENV}
PY=/usr/bin/python3.11
STDLIB=/usr/lib/python3.11

# Standard library entries a service never imports (paths relative to $STDLIB; globs).
PRUNE=(
  test idlelib tkinter turtledemo turtle.py lib2to3 ensurepip venv distutils pydoc_data
  sqlite3 dbm curses __phello__ __hello__.py antigravity.py this.py config-3.11-*
  site-packages dist-packages EXTERNALLY-MANAGED
  'lib-dynload/_test*' 'lib-dynload/_ctypes_test*' 'lib-dynload/xxlimited*'
  'lib-dynload/_xx*' 'lib-dynload/_sqlite3*' 'lib-dynload/_dbm*' 'lib-dynload/_gdbm*'
  'lib-dynload/_curses*' 'lib-dynload/readline*' 'lib-dynload/nis*' 'lib-dynload/ossaudiodev*'
  crypt.py 'lib-dynload/_crypt*'
)

# Bytecode only, in place: compile every .py under $1 (legacy layout), then drop the sources
# and any __pycache__.
sourceless() {
  "$PY" -m compileall -q -b -j 0 --invalidation-mode unchecked-hash "$1" >/dev/null
  find "$1" -name '*.py' ! -type d -delete
  find "$1" -name __pycache__ -type d -prune -exec rm -rf {} +
}

# ---------------------------------------------------------------- interpreter + stdlib
install -D -m 0755 "$PY" "$DEST$PY"
mkdir -p "$DEST$STDLIB"
cp -a "$STDLIB/." "$DEST$STDLIB/"
(
  cd "$DEST$STDLIB"
  for entry in "${PRUNE[@]}"; do
    # shellcheck disable=SC2086 # the entries are globs
    rm -rf $entry
  done
  # Debian's sitecustomize is a link to /etc/python3.11 (apport hooks; absent here).
  rm -f sitecustomize.py
)
# What is kept, by its path on this system (for the package records below).
mapfile -t kept < <(cd "$DEST$STDLIB" && find . \( -type f -o -type l \) -printf "$STDLIB/%P\n")
sourceless "$DEST$STDLIB"
# The pure-Python part as one zip of compressed bytecode, where CPython looks first
# (sys.path[0] is /usr/lib/python311.zip; zipimport, PEP 273): a third of its size unpacked.
# lib-dynload stays a directory (extension modules load from files). Entries sorted and dated
# 1980-01-01: reproducible.
"$PY" - "$DEST$STDLIB" "$DEST/usr/lib/python311.zip" <<'PYTHON'
import os, sys, zipfile
stdlib, archive = sys.argv[1:]
with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
    for folder, dirs, files in os.walk(stdlib):
        if folder == stdlib:
            dirs.remove("lib-dynload")
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            info = zipfile.ZipInfo(os.path.relpath(path, stdlib), (1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as f:
                zf.writestr(info, f.read(), compresslevel=9)
PYTHON
find "$DEST$STDLIB" -mindepth 1 -maxdepth 1 ! -name lib-dynload -exec rm -rf {} +

# ---------------------------------------------------------------- the virtualenv
find "$VENV" -name '*.so' -exec strip --strip-unneeded {} +
find "$VENV" \( -name '*.pyi' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' \
  -o -name '*.c' -o -name '*.h' -o -name '*.cpp' \) -type f -delete
# The console scripts in bin/ stay sources (a script is not imported; a few lines each).
sourceless "$VENV/lib"

# ---------------------------------------------------------------- shared libraries
# Every library the ELF files above load, copied (not linked) to the path the loader finds it at,
# plus the loader itself. Fails if any is missing.
mapfile -t elves < <(
  echo "$DEST$PY"
  find "$DEST$STDLIB/lib-dynload" "$VENV" -name '*.so*' -type f
)
mapfile -t libs < <(ldd "${elves[@]}" 2>&1 | awk '
  /not found/ { print "missing: " $0 > "/dev/stderr"; failed = 1 }
  $2 == "=>" && $3 ~ /^\// { print $3 }
  $1 ~ /^\/.*ld-linux/ { print $1 }
  END { exit failed }' | sort -u)
for lib in "${libs[@]}"; do
  install -D -m 0755 "$(readlink -f "$lib")" "$DEST$lib"
done

# ---------------------------------------------------------------- package records
# The Debian packages all of the above comes from, recorded the way distroless records its own
# (/var/lib/dpkg/status.d/<package>, dpkg's status entry): image scanners (trivy, in the release
# pipeline) read them to know which python3.11, glibc and OpenSSL the image carries.
mkdir -p "$DEST/var/lib/dpkg/status.d"
owners() { dpkg -S "$@" 2>/dev/null | sed 's/: [^:]*$//; s/, /\n/g'; }
{
  owners "$PY"
  owners "${kept[@]}" || true  # a few files postinst makes are nobody's
  # ldd names a library by the path the loader found it at, dpkg by the package's (merged /usr).
  for lib in "${libs[@]}"; do
    owners "$lib" || owners "/usr$lib" || { echo "no package owns $lib" >&2; exit 1; }
  done
} | sort -u | while read -r package; do
  dpkg-query -s "$package" > "$DEST/var/lib/dpkg/status.d/${package%%:*}"
done
