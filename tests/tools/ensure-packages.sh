#!/usr/bin/env bash
# Installs the Debian packages that tests need when their programs are missing.
# Usage: ensure-packages.sh PROGRAM=PACKAGE...   e.g. redis-server=redis-server nginx=nginx
# Services are not started by the install (a policy-rc.d denies it): tests start their own
# instances on free ports. Concurrent callers wait on a lock.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

missing() {
  local out=()
  for spec in "$@"; do
    have "${spec%%=*}" || out+=("${spec#*=}")
  done
  echo "${out[@]:-}"
}

need=$(missing "$@")
[ -z "$need" ] && exit 0

exec 9>/tmp/tickfan-ensure-packages.lock
flock 9
need=$(missing "$@")
[ -z "$need" ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
export DEBIAN_FRONTEND=noninteractive
echo "ensure-packages: installing $need" >&2
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  made_policy=1
fi
cleanup() { if [ "$made_policy" = 1 ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT
# shellcheck disable=SC2086
$SUDO apt-get update -qq >&2
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $need >&2
