#!/usr/bin/env bash
# Installs Debian's chromium for test/browser.test.ts (headless, driven by playwright-core, which
# downloads no browser). Without a GPU its WebGPU adapter is SwiftShader, shipped inside the package.
# --no-install-recommends: headless needs none of them (fonts, desktop integration, the GPU driver
# stack that chromium recommends).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  echo "chromium: already installed ($(/usr/bin/chromium --version 2>/dev/null))"; exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
/usr/bin/chromium --version
