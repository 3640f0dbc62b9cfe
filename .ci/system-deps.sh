#!/usr/bin/env bash
# Installs and starts the system services edgeml's tests and demo need, when they are missing.
# Usage: system-deps.sh [mosquitto|postgres|chromium|wrk ...]   (default: all test deps)
set -euo pipefail
want=("$@")
[ ${#want[@]} -eq 0 ] && want=(mosquitto postgres chromium)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
fi

apt_updated=0
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: apt-get not found; install $* with your package manager" >&2
    return 1
  fi
  if [ $apt_updated -eq 0 ]; then
    $SUDO apt-get update -qq >/dev/null
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

for dep in "${want[@]}"; do
  case "$dep" in
    mosquitto)
      command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || apt_install mosquitto
      ;;
    postgres)
      if ! command -v pg_ctlcluster >/dev/null 2>&1 && ! command -v pg_ctl >/dev/null 2>&1; then
        apt_install postgresql
      fi
      if command -v pg_isready >/dev/null 2>&1 && pg_isready -h 127.0.0.1 -p 5432 -q; then
        :
      elif command -v pg_ctlcluster >/dev/null 2>&1; then
        ver=$(ls /etc/postgresql | sort -n | tail -n 1)
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
      fi
      # the tests connect as postgres:postgres over TCP to database "test"
      as_pg() { if command -v runuser >/dev/null 2>&1; then (cd /tmp && runuser -u postgres -- "$@"); else (cd /tmp && $SUDO -u postgres "$@"); fi; }
      if command -v psql >/dev/null 2>&1; then
        for _ in $(seq 1 20); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.5; done
        as_pg psql -q -c "ALTER USER postgres PASSWORD 'postgres'" >/dev/null 2>&1 || true
        as_pg psql -q -tc "SELECT 1 FROM pg_database WHERE datname='test'" 2>/dev/null | grep -q 1 || \
          as_pg psql -q -c 'CREATE DATABASE test' >/dev/null 2>&1 || true
      fi
      ;;
    chromium)
      command -v chromium >/dev/null 2>&1 || apt_install chromium
      ;;
    wrk)
      command -v wrk >/dev/null 2>&1 || apt_install wrk
      ;;
    *) echo "system-deps: unknown dependency $dep" >&2; exit 2 ;;
  esac
done
