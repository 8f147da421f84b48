#!/usr/bin/env bash
# Install the Debian packages the demo and the tests start as real servers:
# PostgreSQL (ops-db), and for the tests iproute2 (network namespaces, tc),
# openssh-server + rsync (one sshd per test site) and VictoriaMetrics (it accepts the
# InfluxDB v2 write API the metrics use), Redis (the Celery broker of the distributed test),
# chromium + chromium-driver (the headless-browser UI test). A no-op when all are there;
# needs root (or sudo) otherwise.
set -euo pipefail

missing=()
command -v pg_ctl >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || missing+=(postgresql)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
command -v rsync >/dev/null 2>&1 || missing+=(rsync)
command -v ip >/dev/null 2>&1 && command -v tc >/dev/null 2>&1 || missing+=(iproute2)
command -v victoria-metrics >/dev/null 2>&1 || missing+=(victoria-metrics)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo "$0" "$@"
    fi
    echo "system-deps: missing ${missing[*]}; as root run: apt-get install ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
