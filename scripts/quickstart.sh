#!/usr/bin/env bash
# The main job on an embedded default, on a CPU in about two minutes: train a Fashion-MNIST
# classifier, train a masking model against it, and report its quality with a Figure-6 grid.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/quickstart}
rtsal classifier train --data fashion-mnist --width 16 --epochs 1 --out "$OUT/classifier"
rtsal train --blackbox "$OUT/classifier" --data fashion-mnist --steps 200 --batch-size 32 \
  --out "$OUT/masker"
rtsal evaluate "$OUT/masker" --data fashion-mnist --limit 2000 --out "$OUT/report"
echo "see $OUT/report/grid.png and $OUT/report/report.json"
