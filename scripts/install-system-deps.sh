#!/usr/bin/env bash
# System programs the test suite drives for real: nginx (deploy tests), promtool
# (metrics exposition), systemd-analyze (unit files), Chromium (playground), newman
# (Postman collection), redis-server (the cache's Redis backend) and wrk (benchmarks).
# Idempotent: installs only what is missing.
set -euo pipefail

declare -A APT_FOR=([nginx]=nginx [promtool]=prometheus [systemd-analyze]=systemd [chromium]=chromium
  [redis-server]=redis-server [wrk]=wrk)
missing_apt=()
for program in "${!APT_FOR[@]}"; do
  command -v "$program" >/dev/null 2>&1 || missing_apt+=("${APT_FOR[$program]}")
done
missing_npm=()
command -v newman >/dev/null 2>&1 || missing_npm+=(newman)

if [[ ${#missing_apt[@]} -eq 0 && ${#missing_npm[@]} -eq 0 ]]; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "missing system packages; install them as root, then rerun:" >&2
  [[ ${#missing_apt[@]} -gt 0 ]] && echo "  apt-get install -y --no-install-recommends ${missing_apt[*]}" >&2
  [[ ${#missing_npm[@]} -gt 0 ]] && echo "  npm install -g ${missing_npm[*]}" >&2
  exit 1
fi
if [[ ${#missing_apt[@]} -gt 0 ]]; then
  echo "installing: ${missing_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing_apt[@]}" >/dev/null
  # Debian starts the packaged daemons; the tests run their own on loopback ports.
  for service in nginx prometheus redis-server; do
    if command -v systemctl >/dev/null 2>&1; then systemctl stop "$service" 2>/dev/null || true; fi
    if command -v service >/dev/null 2>&1; then service "$service" stop >/dev/null 2>&1 || true; fi
  done
fi
if [[ ${#missing_npm[@]} -gt 0 ]]; then
  echo "installing: ${missing_npm[*]}"
  npm install -g --silent "${missing_npm[@]}" >/dev/null
fi
