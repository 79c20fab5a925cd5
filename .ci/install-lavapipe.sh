#!/usr/bin/env bash
# Installs Mesa's lavapipe (Vulkan on the CPU) from Debian bookworm-backports, so Dawn finds an adapter
# on a machine without a GPU. bookworm's own mesa 22.3 is rejected by Dawn; backports carries 25.x.
set -euo pipefail
if ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 && dpkg -s mesa-vulkan-drivers 2>/dev/null | grep -q '^Version: 25'; then
  echo "lavapipe: already installed"; exit 0
fi
src=/etc/apt/sources.list.d/bookworm-backports.sources
if [ ! -f "$src" ]; then
  cat > "$src" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
dpkg -s mesa-vulkan-drivers | grep '^Version'
