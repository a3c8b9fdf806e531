#!/usr/bin/env bash
# The package as a user installs it: build the wheel, install it (not editable) into a fresh venv, and run
# compile, inspect, run and eval from it, outside the source tree (so nothing is imported from the checkout).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip
"$WORK/venv/bin/python" -m pip wheel -q --no-deps -w "$WORK/dist" "$ROOT" 2>&1 | tee "$WORK/wheel.log"
wheel=$(ls "$WORK"/dist/snnc-*.whl)
"$WORK/venv/bin/python" -m pip install -q "$wheel[eval]" 2>&1 | tee "$WORK/install.log"
if grep -qi "deprecat" "$WORK/wheel.log" "$WORK/install.log"; then
  echo "wheel smoke: pip printed deprecation warnings (see above)"; exit 1
fi
cd "$WORK"
snnc="$WORK/venv/bin/snnc"
"$WORK/venv/bin/python" "$ROOT/examples/digits/evaluate_snn.py" --build digits -n 6 -T 4,8 --calib-images 4
"$snnc" inspect digits/digits_relu.lava --target loihi2 > inspect.txt
image=$(ls digits/calib/*.png | head -n 1)
"$snnc" run digits/digits_relu.lava --image "$image" -T 8 --json run.json --out run.png -q
test -s run.json && test -s run.png && test -s digits/report/metrics.json
echo "wheel smoke: $(basename "$wheel") installed; compile, inspect, run and eval ran from it"
