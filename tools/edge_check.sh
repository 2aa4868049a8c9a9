#!/usr/bin/env bash
# tools/edge_check.sh: prove that rawserve installs with pip and serves on an
# arm64 Debian box (issue 17, build 4), on an x86_64 host, under QEMU.
#
#   sudo tools/edge_check.sh [--clean | --clean-only] [--cpu cortex-a72|cortex-a76|...]
#
# 1. Builds an arm64 Debian bookworm root file system with debootstrap
#    (--variant=minbase, python3 + python3-venv) from Debian's mirror.
# 2. Builds rawserve's wheel from the committed tree (git archive HEAD, so
#    uncommitted edits never leak in) and downloads its aarch64 dependency
#    wheels for CPython 3.11 (bookworm's python3) from PyPI.
# 3. Makes a venv with the rootfs's own python3 under qemu-aarch64-static and
#    `pip install --no-index`es rawserve from those wheels only, so a missing
#    or x86-only dependency fails here rather than on a board.
# 4. Starts `python -m rawserve` under emulation (cleartext HTTP/1.1 + h2c,
#    TLS with a certificate the emulated cryptography generated) and answers
#    /predict (JSON and PNG upload) and /v2/models/digits/infer from the host
#    with curl over HTTP/1.1, h2c and h2 (ALPN); measures start-to-ready,
#    RSS, idle CPU over a minute and a bounded h2load run; shuts it down with
#    SIGTERM.
#
# The emulator is always called explicitly (qemu-aarch64-static -L ROOTFS),
# whether or not binfmt_misc is available; the script says which it found.
# Without binfmt, debootstrap's second stage cannot run (dpkg would exec arm64
# binaries), so the packages are unpacked without their maintainer scripts:
# enough for python3, not a bootable system. Two emulation artefacts are
# handled and described in docs/EDGE.md: the rootfs gets an ARM
# /proc/cpuinfo (ONNX Runtime's cpuinfo crashes on the host's x86 one under
# QEMU 7.2), and the venv's interpreter path is a host path.
#
# Cache: $EDGE_CACHE (default /var/cache/rawserve-edge) keeps the rootfs, the
# dependency wheels and the venv, so a second run skips debootstrap, the
# downloads and the full install. --clean empties it first; --clean-only
# empties it and exits.
#
# Time (2 shared x86_64 cores, docs/EDGE.md): 4 to 8 minutes the first run
# (debootstrap under a minute, the emulated pip install 1.5 to 3), 3 to
# 4.5 minutes cached (the one-minute idle measurement and two emulated
# start-ups). It downloads from Debian and PyPI and takes minutes: NOT for
# CI; run it by hand.
#
# Environment: EDGE_CACHE, EDGE_MIRROR (http://deb.debian.org/debian),
# EDGE_CPU (cortex-a72, the Raspberry Pi 4's core; cortex-a76 for a Pi 5),
# EDGE_IDLE_SECONDS (60), EDGE_REQUESTS (500 per h2load run),
# EDGE_HTTP_PORT / EDGE_TLS_PORT (default: free ports).
#
# Exit status: 0 when every check passed, 1 otherwise, 2 on bad usage.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${EDGE_CACHE:-/var/cache/rawserve-edge}
MIRROR=${EDGE_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
CPU_MODEL=${EDGE_CPU:-cortex-a72}
IDLE_SECONDS=${EDGE_IDLE_SECONDS:-60}
REQUESTS=${EDGE_REQUESTS:-500}
QEMU=qemu-aarch64-static
CLEAN=0

usage() {
    sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
        --clean) CLEAN=1 ;;
        --clean-only) CLEAN=2 ;;
        --cpu) CPU_MODEL=${2:?--cpu needs a model}; shift ;;
        -h | --help) usage ;;
        *) echo "edge_check: unknown argument: $1" >&2; usage ;;
    esac
    shift
done

# MIDR part numbers for the fake /proc/cpuinfo, matching the emulated core.
case $CPU_MODEL in
    cortex-a53) CPU_PART=0xd03 ;;
    cortex-a72) CPU_PART=0xd08 ;;
    cortex-a76) CPU_PART=0xd0b ;;
    neoverse-n1) CPU_PART=0xd0c ;;
    *) echo "edge_check: --cpu must be cortex-a53, cortex-a72, cortex-a76 or neoverse-n1" >&2; exit 2 ;;
esac

log() { printf '[edge %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { log "FAILED: $*"; exit 1; }
now_ns() { date +%s%N; }
# Seconds between two now_ns readings, one decimal.
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap needs it)"
case $CACHE in
    "" | / | "$REPO" | "$REPO"/*) die "EDGE_CACHE=$CACHE: pick a directory outside the repository" ;;
esac

if [ $CLEAN -gt 0 ]; then
    log "--clean: removing $CACHE"
    rm -rf --one-file-system "$CACHE"
    [ $CLEAN = 2 ] && exit 0
fi

RUN_START=$(now_ns)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
FAILURES=0
declare -a SUMMARY=()
note() { SUMMARY+=("$1"); log "$1"; }
check() { # check NAME EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then
        log "ok   $1"
    else
        log "FAIL $1: expected '$2', got '$3'"
        FAILURES=$((FAILURES + 1))
    fi
}

# --- host tools -----------------------------------------------------------
need=()
command -v debootstrap > /dev/null || need+=(debootstrap)
command -v $QEMU > /dev/null || need+=(qemu-user-static)
command -v h2load > /dev/null || need+=(nghttp2-client)
command -v curl > /dev/null || need+=(curl)
command -v git > /dev/null || need+=(git)
python3 -c 'import venv, ensurepip' 2> /dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    command -v apt-get > /dev/null || die "install: ${need[*]}"
    log "apt-get install ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" > /dev/null
fi
curl --version | grep -q HTTP2 || die "this curl has no HTTP/2 support"
log "$($QEMU --version | head -n 1), emulating $CPU_MODEL"

# binfmt_misc decides whether a plain `chroot ROOTFS` could run arm64
# programs. The check does not depend on it: it runs every arm64 program as
# `qemu-aarch64-static -L ROOTFS ROOTFS/...`, which works either way.
if grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
    note "binfmt_misc: qemu-aarch64 registered; still calling the emulator explicitly"
else
    note "binfmt_misc: no qemu-aarch64 handler; calling $QEMU explicitly"
fi

mkdir -p "$CACHE"
ROOTFS=$CACHE/rootfs
WHEELS=$CACHE/wheels
VENV=$ROOTFS/opt/rawserve
RUN=$CACHE/run-last
rm -rf "$RUN"
mkdir -p "$RUN"

emu() { "$QEMU" -cpu "$CPU_MODEL" -L "$ROOTFS" "$@"; }
vpy() { emu "$VENV/bin/python" "$@"; }

# --- 1. the arm64 root file system ------------------------------------------
if [ -f "$ROOTFS/.rawserve-edge-rootfs" ]; then
    note "rootfs: cached ($ROOTFS)"
else
    t0=$(now_ns)
    rm -rf --one-file-system "$ROOTFS" "$ROOTFS.tmp"
    log "debootstrap --arch=arm64 --variant=minbase --foreign $SUITE from $MIRROR"
    debootstrap --arch=arm64 --variant=minbase --foreign --include=python3,python3-venv \
        "$SUITE" "$ROOTFS.tmp" "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 ||
        die "debootstrap (see $CACHE/debootstrap.log)"
    # --foreign unpacked only the essential set; the rest (python3 among
    # them) waits for a second stage that would exec arm64 dpkg. Unpack it
    # on the host instead; --keep-directory-symlink keeps the merged-/usr
    # links (/lib -> usr/lib) that a plain extraction would replace.
    while read -r pkg; do
        deb=$(awk -v p="$pkg" '$1 == p { print $2 }' "$ROOTFS.tmp/debootstrap/debpaths")
        [ -n "$deb" ] || die "debootstrap downloaded no package $pkg"
        dpkg-deb --fsys-tarfile "$ROOTFS.tmp$deb" | tar -x --keep-directory-symlink -C "$ROOTFS.tmp"
    done < <(tr ' ' '\n' < "$ROOTFS.tmp/debootstrap/base" | grep .)
    rm -f "$ROOTFS.tmp"/var/cache/apt/archives/*.deb
    # The first stage links /proc to the host's; we need a directory there
    # for the ARM cpuinfo written below.
    rm -f "$ROOTFS.tmp/proc"
    mkdir -p "$ROOTFS.tmp/proc"
    cp "$(command -v $QEMU)" "$ROOTFS.tmp/usr/bin/"
    echo "$SUITE arm64 minbase from $MIRROR, $(date -u +%FT%TZ)" > "$ROOTFS.tmp/.rawserve-edge-rootfs"
    mv "$ROOTFS.tmp" "$ROOTFS"
    note "rootfs: built with debootstrap in $(secs "$t0" "$(now_ns)") s"
fi

# Under qemu-user the guest reads the host's /proc/cpuinfo (x86), where ONNX
# Runtime's cpuinfo finds no ARM processor and crashes on import (SIGSEGV).
# -L resolves /proc/cpuinfo to ROOTFS/proc/cpuinfo first, so put there what
# the emulated core would show, one entry per host CPU (the /sys lists that
# cpuinfo also reads are the host's). A real board has the real file.
{
    for i in $(seq 0 $(($(nproc) - 1))); do
        printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
        printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: %s\nCPU revision\t: 3\n\n' "$CPU_PART"
    done
} > "$ROOTFS/proc/cpuinfo"

py_info=$(emu "$ROOTFS/usr/bin/python3" -c 'import platform, sys; print(platform.machine(), platform.python_version())') ||
    die "the rootfs's python3 does not run under $QEMU"
check "rootfs python3 is aarch64 CPython 3.11" "aarch64 3.11" "${py_info%.*}"
note "rootfs python3: $py_info"

# --- 2. rawserve's wheel and its aarch64 dependencies -----------------------
HOSTVENV=$CACHE/host-venv
if [ ! -x "$HOSTVENV/bin/pip" ]; then
    python3 -m venv "$HOSTVENV"
fi
HOSTPIP=("$HOSTVENV/bin/python" -m pip --disable-pip-version-check -q)
rm -rf "$CACHE/src" "$CACHE/dist"
mkdir -p "$CACHE/src" "$CACHE/dist"
REV=$(git -C "$REPO" rev-parse --short HEAD)
git -C "$REPO" archive "$REV" | tar -x -C "$CACHE/src"
"${HOSTPIP[@]}" wheel --no-deps "$CACHE/src" -w "$CACHE/dist" > "$CACHE/dist/build.log" 2>&1 ||
    die "building rawserve's wheel (see $CACHE/dist/build.log)"
WHEEL=$(ls "$CACHE"/dist/rawserve-*.whl)
note "rawserve wheel: $(basename "$WHEEL"), $(($(stat -c %s "$WHEEL") / 1024)) KiB, from $REV"

# The wheel's requirements decide whether the cached dependency wheels still
# fit; a change in pyproject.toml's dependencies downloads them again.
deps_key=$("$HOSTVENV/bin/python" - "$WHEEL" << 'EOF'
import hashlib, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
reqs = sorted(l for l in z.read(meta).decode().splitlines() if l.startswith("Requires-Dist:") and "extra ==" not in l)
print(hashlib.sha256("\n".join(reqs).encode()).hexdigest()[:16])
EOF
)
if [ "$(cat "$WHEELS/.key" 2> /dev/null)" = "$deps_key" ]; then
    note "dependency wheels: cached ($WHEELS)"
else
    t0=$(now_ns)
    rm -rf "$WHEELS" "$WHEELS.tmp"
    # pip matches --platform tags literally: bookworm's glibc 2.36 accepts
    # every manylinux_2_N up to 36, and recent onnxruntime and cryptography
    # publish only manylinux_2_28 / _2_34 aarch64 wheels, so list them all,
    # newest first as pip on the board itself would prefer them.
    plats=()
    for v in $(seq 36 -1 17); do plats+=(--platform "manylinux_2_${v}_aarch64"); done
    plats+=(--platform manylinux2014_aarch64)
    "${HOSTPIP[@]}" download --only-binary=:all: "${plats[@]}" --python-version 3.11 \
        --implementation cp -d "$WHEELS.tmp" "$WHEEL" > "$CACHE/download.log" 2>&1 ||
        die "no complete set of aarch64 cp311 wheels (see $CACHE/download.log)"
    rm -f "$WHEELS.tmp"/rawserve-*.whl
    echo "$deps_key" > "$WHEELS.tmp/.key"
    mv "$WHEELS.tmp" "$WHEELS"
    note "dependency wheels: downloaded in $(secs "$t0" "$(now_ns)") s"
fi
for pkg in onnxruntime numpy aioquic cryptography orjson httptools pillow; do
    w=""
    for f in "$WHEELS"/*.whl; do
        f=$(basename "$f")
        case ${f,,} in "$pkg"-*aarch64*) w=$f; break ;; esac
    done
    check "aarch64 wheel for $pkg" yes "$([ -n "$w" ] && echo yes || echo no)"
    if [ -n "$w" ]; then log "     $w"; fi
done
note "dependency wheels: $(find "$WHEELS" -name '*.whl' | wc -l) files, $(du -sm "$WHEELS" | cut -f1) MiB"

# --- 3. pip install inside the rootfs, under emulation ----------------------
# The venv is kept while the dependency wheels are the same; rawserve itself
# is reinstalled from this run's wheel every time.
t0=$(now_ns)
if [ "$(cat "$VENV/.key" 2> /dev/null)" = "$deps_key" ]; then
    vpy -m pip install --disable-pip-version-check -q --no-index --no-deps --force-reinstall "$WHEEL" ||
        die "pip install of rawserve's wheel"
    install_kind="rawserve only (dependencies cached)"
else
    rm -rf "$VENV"
    # --without-pip, then pip from Debian's own pip wheel: ensurepip would
    # start a second arm64 python with subprocess, which fails without
    # binfmt_misc; running pip from its wheel stays in one process.
    emu "$ROOTFS/usr/bin/python3" -m venv --without-pip "$VENV" || die "python3 -m venv"
    pipwhl=$(ls "$ROOTFS"/usr/share/python-wheels/pip-*.whl)
    vpy "$pipwhl/pip" install --disable-pip-version-check -q --no-index "$pipwhl" || die "installing pip"
    vpy -m pip install --disable-pip-version-check -q --no-index --find-links "$WHEELS" "$WHEEL" ||
        die "pip install rawserve with --no-index from the aarch64 wheels"
    echo "$deps_key" > "$VENV/.key"
    install_kind="full"
fi
vpy -m pip check --disable-pip-version-check > "$RUN/pip-check.txt" 2>&1 ||
    { cat "$RUN/pip-check.txt"; die "pip check"; }
note "pip install ($install_kind) under emulation: $(secs "$t0" "$(now_ns)") s"
site=$VENV/lib/python3.11/site-packages
note "sizes: venv $(du -sm "$VENV" | cut -f1) MiB (rawserve $(du -sk "$site/rawserve" | cut -f1) KiB, onnxruntime $(du -sm "$site/onnxruntime" | cut -f1) MiB, numpy $(du -sm "$site/numpy" "$site/numpy.libs" | awk '{s += $1} END {print s}') MiB); rootfs $(du -sxm "$ROOTFS" | cut -f1) MiB"

# --- 4. serve under emulation and ask from the host --------------------------
vpy -m rawserve certs --certs-dir "$RUN/certs" > "$RUN/certs.log" 2>&1 || die "python -m rawserve certs"

free_port() { # a port free for TCP and UDP (HTTP/3 shares the TLS port's number)
    python3 - << 'EOF'
import socket
while True:
    t = socket.socket()
    t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        t.close()
        u.close()
    print(port)
    break
EOF
}
HTTP_PORT=${EDGE_HTTP_PORT:-$(free_port)}
TLS_PORT=${EDGE_TLS_PORT:-$(free_port)}
H=http://127.0.0.1:$HTTP_PORT
S=https://127.0.0.1:$TLS_PORT

SERVER_PID=""
STOP_STATUS=""
stop_server() { # SIGTERM, wait up to 30 s for the drain; sets STOP_STATUS
    local pid=$SERVER_PID
    [ -n "$pid" ] || return 0
    SERVER_PID=""
    STOP_STATUS=0
    kill -TERM "$pid" 2> /dev/null || true
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2> /dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2> /dev/null; then
        kill -KILL "$pid" 2> /dev/null || true
        STOP_STATUS="killed after 30 s"
    fi
    local rc=0
    wait "$pid" || rc=$?
    [ "$STOP_STATUS" != 0 ] || STOP_STATUS=$rc
}
trap stop_server EXIT
# An interrupted run still stops the emulated server (the EXIT trap).
trap 'exit 1' INT TERM HUP

start_server() { # start_server LOGNAME [extra rawserve flags]; sets SERVER_PID, READY_S, READY_CPU_S
    local logfile=$RUN/$1.log
    shift
    local t0 code
    t0=$(now_ns)
    # The emulator itself in the background (not a shell function), so that
    # $! is the process whose /proc entries are measured.
    "$QEMU" -cpu "$CPU_MODEL" -L "$ROOTFS" "$VENV/bin/python" -m rawserve --host 127.0.0.1 --http-port "$HTTP_PORT" --port "$TLS_PORT" \
        --certfile "$RUN/certs/dev-cert.pem" --keyfile "$RUN/certs/dev-key.pem" "$@" \
        > "$logfile" 2>&1 &
    SERVER_PID=$!
    # /readyz turns 200 once the model is loaded and warmed up.
    for _ in $(seq 1 3000); do
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$H/readyz" || true)
        [ "$code" = 200 ] && break
        kill -0 "$SERVER_PID" 2> /dev/null || { cat "$logfile"; die "rawserve exited while starting"; }
        sleep 0.1
    done
    [ "$code" = 200 ] || { cat "$logfile"; die "rawserve not ready after 300 s"; }
    READY_S=$(secs "$t0" "$(now_ns)")
    # CPU time is steadier than wall time on a shared host.
    READY_CPU_S=$(awk -v t="$(ticks)" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", t / hz }')
}

ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"; } # utime + stime, all threads
CLK_TCK=$(getconf CLK_TCK)

start_server server
note "start-to-ready (first start): $READY_S s wall, $READY_CPU_S s CPU"

PIXELS='0,0,7,16,14,3,0,0,0,0,9,14,11,15,0,0,0,0,1,5,0,15,5,0,0,0,0,0,0,16,5,0,0,0,0,0,3,16,4,0,0,0,0,1,12,14,1,0,0,0,5,12,16,16,14,1,0,0,8,16,14,10,13,3'
printf '{"inputs": [%s]}' "$PIXELS" > "$RUN/predict.json"
printf '{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [%s]}]}' "$PIXELS" > "$RUN/infer.json"

# curl_json NAME CURLFLAGS... : prints "<http_version> <body>"
ask() {
    curl -sS -m 60 -w '\n%{http_version} %{http_code}' "$@" 2>&1 || true
}
prediction() { grep -o '"prediction":[0-9]*' <<< "$1" | head -n 1 | cut -d: -f2; }
v2_label() { grep -o '"name":"label"[^}]*' <<< "$1" | grep -o '"data":\[[0-9]*' | grep -o '[0-9]*$'; }
status_line() { tail -n 1 <<< "$1"; }

JSON=(-H 'content-type: application/json')
# The JSON digit is a "2" (README; the same answer as on x86_64).
for proto in "http1.1 $H" "http2-prior-knowledge $H" "http1.1 $S" "http2 $S"; do
    flag=${proto% *} base=${proto#* }
    want_version=$([ "$flag" = http1.1 ] && echo 1.1 || echo 2)
    out=$(ask -k "--$flag" "${JSON[@]}" --data-binary @"$RUN/predict.json" "$base/predict")
    check "POST /predict JSON over --$flag $base" "2 $want_version 200" "$(prediction "$out") $(status_line "$out")"
    out=$(ask -k "--$flag" "${JSON[@]}" --data-binary @"$RUN/infer.json" "$base/v2/models/digits/infer")
    check "POST /v2/models/digits/infer over --$flag $base" "2 $want_version 200" "$(v2_label "$out") $(status_line "$out")"
done
out=$(curl -sS -m 60 -D - -o /dev/null --http2-prior-knowledge "${JSON[@]}" --data-binary @"$RUN/predict.json" "$H/predict" || true)
hit=$(grep -i '^cache-status:' <<< "$out" | cut -d' ' -f2- | tr -d '\r')
check "the same input again is a result-cache hit" "rawserve; hit" "${hit%%;*}; $(cut -d';' -f2 <<< "$hit" | tr -d ' ')"
# Every sample image, decoded by Pillow on arm64, over h2 with TLS.
for img in "$REPO"/examples/digits/*.png; do
    name=$(basename "$img" .png)
    digit=$(awk -v n="$name" 'BEGIN { split("zero one two three four five six seven eight nine", w); for (i = 1; i <= 10; i++) if (w[i] == n) print i - 1 }')
    out=$(ask -k --http2 -F "file=@$img" "$S/predict")
    check "POST /predict $name.png over h2" "$digit 2 200" "$(prediction "$out") $(status_line "$out")"
done
out=$(ask "$H/v2/health/ready")
check "GET /v2/health/ready" "1.1 200" "$(status_line "$out")"

read -r rss hwm threads < <(awk '/^VmRSS/ { r = $2 } /^VmHWM/ { h = $2 } /^Threads/ { t = $2 } END { print r, h, t }' "/proc/$SERVER_PID/status")
# QEMU's translated-code buffer is one big anonymous rwx mapping in the same
# process; its resident part is emulation overhead a board does not have.
tcg_kb=$(awk '/^[0-9a-f]+-[0-9a-f]+ rwxp / { m = 1; next } /^[0-9a-f]+-/ { m = 0 } m && /^Rss:/ { s += $2 } END { print s + 0 }' "/proc/$SERVER_PID/smaps")
note "RSS after warm-up: $((rss / 1024)) MiB (peak $((hwm / 1024)) MiB, $threads threads), of which QEMU's code buffer $((tcg_kb / 1024)) MiB"

sleep 2
a=$(ticks)
# In the background and waited for, so that a TERM or INT to the script
# stops it (and the server, by the EXIT trap) now rather than a minute later.
sleep "$IDLE_SECONDS" &
wait $!
b=$(ticks)
note "idle CPU over ${IDLE_SECONDS} s (ONNX Runtime spinning off, the default): $(awk -v t=$((b - a)) -v hz="$CLK_TCK" -v s="$IDLE_SECONDS" 'BEGIN { printf "%.2f s = %.2f%% of one core", t / hz, 100 * t / hz / s }')"

# load LABEL H2LOAD-ARGS... : a bounded h2load run; rps and CPU per request
load() {
    local label=$1 a b out counts ok
    shift
    a=$(ticks)
    out=$(timeout 600 h2load -n "$REQUESTS" "$@" 2>&1 || true)
    b=$(ticks)
    counts=$(grep -o '^requests: .*' <<< "$out" || true)
    ok=$(awk '/^requests:/ { print $8 } /^status codes:/ { print $3 }' <<< "$out" | paste -sd/)
    check "h2load $label: every request succeeded with 2xx" "$REQUESTS/$REQUESTS" "${ok:-none}"
    [ "$ok" = "$REQUESTS/$REQUESTS" ] || log "$out"
    note "emulated $label: $(grep -o '[0-9.]* req/s' <<< "$out" || echo '? req/s'), $(awk -v t=$((b - a)) -v hz="$CLK_TCK" -v n="$REQUESTS" 'BEGIN { printf "%.1f", 1000 * t / hz / n }') ms server CPU per request ($counts)"
}
BODY=(-d "$RUN/predict.json" -H 'content-type: application/json')
load "h2c /predict, result-cache hits, -c 2 -m 4" -c 2 -m 4 "${BODY[@]}" "$H/predict"

stop_server
check "SIGTERM drains and exits 0" 0 "$STOP_STATUS"

# Identical h2load bodies hit the result cache; a second server without it
# runs the model for every request.
start_server server-nocache --no-cache
note "start-to-ready (second start, --no-cache): $READY_S s wall, $READY_CPU_S s CPU"
load "h2c /predict, model run each time, -c 2 -m 4" -c 2 -m 4 "${BODY[@]}" "$H/predict"
load "HTTP/1.1 /predict, model run each time, -c 4" --h1 -c 4 "${BODY[@]}" "$H/predict"
stop_server
check "SIGTERM drains and exits 0 (--no-cache)" 0 "$STOP_STATUS"

# --- summary -----------------------------------------------------------------
TOTAL=$(secs "$RUN_START" "$(now_ns)")
{
    echo "rawserve edge check, $(date -u +%FT%TZ), rawserve $REV, emulated $CPU_MODEL"
    echo "(figures under emulation on $(nproc) x86_64 cores, load average at the start $LOAD_START, at the end $(cut -d' ' -f1-3 /proc/loadavg): not a real ARM board's speed)"
    for line in "${SUMMARY[@]}"; do echo "  $line"; done
    echo "  total: $TOTAL s; logs in $RUN"
    if [ $FAILURES = 0 ]; then echo "PASSED"; else echo "FAILED: $FAILURES check(s)"; fi
} | tee "$RUN/summary.txt"
[ $FAILURES = 0 ]
