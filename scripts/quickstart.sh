#!/usr/bin/env bash
# The main job on an embedded default: explain real photographs (the ones shipped with
# scikit-image) with rtsal's shipped ImageNet masking model for EfficientNet-Lite0, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/quickstart}
mkdir -p "$OUT/photos"
python - "$OUT/photos" <<'PY'
import sys
from pathlib import Path

from PIL import Image
from skimage import data

out = Path(sys.argv[1])
for name in ("chelsea", "coffee", "astronaut", "rocket", "camera"):
    Image.fromarray(getattr(data, name)()).save(out / f"{name}.jpg", quality=95)
PY
rtsal explain "$OUT/photos" --out "$OUT/explained"
echo "open $OUT/explained/index.html"
