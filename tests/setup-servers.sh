#!/bin/sh
# The real tools the test suite runs beside shim, from the system's packages when missing:
# strace (the sidecar's file-writing system calls are traced in the end-to-end tests).
# Idempotent and non-interactive; prints one line.
set -eu
need=""
command -v strace >/dev/null 2>&1 || need="$need strace"
if [ -z "$need" ]; then
    echo "tests/setup-servers.sh: strace present"
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $need
echo "tests/setup-servers.sh: installed$need"
