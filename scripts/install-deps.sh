#!/usr/bin/env bash
# Installs the system packages lm4ve builds against, only those that are missing, on a
# Debian/Ubuntu machine. Called by the Makefile; safe to run again.
set -euo pipefail

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in pkg-config libhdf5-dev clang libavcodec-dev libavformat-dev libavutil-dev libswscale-dev ffmpeg nginx libnginx-mod-http-dav-ext libopenmpi-dev openmpi-bin libturbojpeg0-dev libjpeg-dev; do
  have_pkg "$pkg" || need+=("$pkg")
done

if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages: ${need[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
