#!/usr/bin/env bash
# Install the Debian packages the demo and the tests start as real servers.
# A no-op when everything is already there; needs root (or sudo) otherwise.
set -euo pipefail

packages=(postgresql)
missing=()
command -v pg_ctl >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || missing+=(postgresql)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo "$0" "$@"
    fi
    echo "system-deps: missing ${missing[*]}; run as root: apt-get install ${packages[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${packages[@]}"
