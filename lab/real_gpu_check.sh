#!/usr/bin/env bash
# Runs the suite's host-level scenarios on a GPU machine without Kubernetes or network (docs/real-gpu.md):
# installs the Python dependencies from the wheels in .wheels/ (pip download on a networked machine), then
# `pytest features/ --host-only --host-backend local`. Output and the run folder go to ${OUT:-./real-gpu-out}.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-./real-gpu-out}"
mkdir -p "$out"
{
  echo "== machine"; uname -a; python3 --version; nvidia-smi --version | head -3; command -v nvcc && nvcc --version | tail -2
  echo "== nvidia-smi failures the lab's twin plays (exit codes)"
  nvidia-smi --bogus-option; echo "rc=$?"
  nvidia-smi --query-gpu=bogus_field --format=csv; echo "rc=$?"
} > "$out/machine.txt" 2>&1
python3 -m pip install -q --no-index --find-links .wheels --target .pydeps -r <(python3 - <<'PY'
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))
PY
) > "$out/pip.txt" 2>&1 || { echo "pip install failed"; cat "$out/pip.txt"; exit 2; }
export PYTHONPATH="$PWD/.pydeps${PYTHONPATH:+:$PYTHONPATH}"
python3 -m pytest features/ --host-only --host-backend local -v -p no:cacheprovider --report-dir real-gpu-reports \
  2>&1 | tee "$out/pytest.txt"
rc=${PIPESTATUS[0]}
cp real-gpu-reports/latest/summary.json real-gpu-reports/latest/junit.xml "$out/" 2>/dev/null
echo "exit code: $rc" | tee -a "$out/pytest.txt"
exit "$rc"
