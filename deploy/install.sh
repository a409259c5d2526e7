#!/usr/bin/env bash
# Set up Distillery on a Debian machine: the Fashion-MNIST package, a virtual environment in
# .venv (it sees system site-packages, so an installed torch is reused, not copied), torch and
# torchvision (taken from local disk where pip's cap points there), and this project.
#
#   bash deploy/install.sh          # the pipeline
#   bash deploy/install.sh test     # the pipeline and what the tests need (pytest, Chromium)
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
fi

# The dashboard test opens the Prefect UI in headless Chromium.
if [ "${1:-}" = "test" ] && ! command -v chromium >/dev/null; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv --system-site-packages .venv
fi
pip_install() { .venv/bin/python -m pip install --disable-pip-version-check -q "$@"; }
pip_install "torch==2.14.1" "torchvision==0.29.1"
if [ "${1:-}" = "test" ]; then
  pip_install -e ".[test]"
else
  pip_install -e .
fi
echo "installed: $(.venv/bin/distillery --help | head -1)"
