#!/bin/sh
# Install the benchmark's tools from Debian if they are missing: wrk, hey and nginx (nginx-light, or
# plain nginx on releases without nginx-light). Non-interactive and idempotent: when everything is
# present it does nothing. The packaged nginx service is never needed (bench/run.py starts its own
# nginx on a free loopback port), so its start at install time is suppressed when that is possible.
set -eu

missing=""
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
command -v hey >/dev/null 2>&1 || missing="$missing hey"
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    missing="$missing nginx"
fi

if [ -z "$missing" ]; then
    echo "bench/setup.sh: wrk, hey and nginx are installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "bench/setup.sh: missing:$missing; run as root or install sudo" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "bench/setup.sh: missing:$missing; no apt-get here, install them by hand" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "bench/setup.sh: installing:$missing"
$SUDO apt-get update -qq

packages=""
for tool in $missing; do
    case "$tool" in
        nginx)
            if apt-cache show nginx-light >/dev/null 2>&1; then
                packages="$packages nginx-light"
            else
                packages="$packages nginx"
            fi
            ;;
        *) packages="$packages $tool" ;;
    esac
done

# Keep the package's own nginx service from starting (port 80) during the install, unless a policy
# is already in place; the temporary policy is removed again on exit.
policy=/usr/sbin/policy-rc.d
added_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    added_policy=1
fi
cleanup() { if [ -n "$added_policy" ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT INT TERM

# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold $packages

for tool in wrk hey; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench/setup.sh: $tool still missing" >&2; exit 1; }
done
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { echo "bench/setup.sh: nginx still missing" >&2; exit 1; }
echo "bench/setup.sh: done"
