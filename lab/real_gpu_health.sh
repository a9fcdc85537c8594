#!/usr/bin/env bash
# The GPU health scenarios on a real GPU machine without Kubernetes or network (docs/real-gpu.md): installs the
# Python dependencies from .wheels/ (like lab/real_gpu_check.sh), records what the health read sees, runs the
# host-only scenarios (health included), then once more with an impossible threshold (max_temperature_c = 1,
# pinned in a pyproject.toml of a scratch folder the way a user pins it) that must fail with the measured value.
set -uo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
out="${OUT:-./real-gpu-out}"
mkdir -p "$out"
{
  echo "== machine"; uname -a; hostname; python3 --version; nvidia-smi --version | head -3
  echo "== lspci -n -D -d 10de:"; lspci -n -D -d 10de:; echo "rc=$?"
  echo "== ls /sys/bus/pci/devices (vendor 0x10de)"
  for d in /sys/bus/pci/devices/*; do [ "$(cat "$d/vendor")" = 0x10de ] && echo "${d##*/} $(cat "$d/class") $(cat "$d/device")"; done
  echo "== journalctl -k -b -n 3 -q --no-pager -o short-iso"; journalctl -k -b -n 3 -q --no-pager -o short-iso; echo "rc=$?"
  echo "== dmesg --time-format iso | grep NVRM | tail -5"; dmesg --time-format iso | grep NVRM | tail -5; echo "rc=$?"
  echo "== pgrep -x nvidia-persistenced"; pgrep -x nvidia-persistenced; echo "rc=$?"
  echo "== nvidia-smi --query-gpu=clocks_event_reasons.active,pcie.link.gen.current,pcie.link.width.current,temperature.gpu --format=csv"
  nvidia-smi --query-gpu=clocks_event_reasons.active,pcie.link.gen.current,pcie.link.width.current,temperature.gpu --format=csv
} > "$out/machine.txt" 2>&1
python3 -m pip install -q --no-index --find-links .wheels --target .pydeps -r <(python3 - <<'PY'
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))
PY
) > "$out/pip.txt" 2>&1 || { echo "pip install failed"; cat "$out/pip.txt"; exit 2; }
export PYTHONPATH="$repo/.pydeps${PYTHONPATH:+:$PYTHONPATH}"
python3 -m pytest features/ --host-only --host-backend local -v -p no:cacheprovider --report-dir real-gpu-reports \
  -rs 2>&1 | tee "$out/pytest.txt"
rc=${PIPESTATUS[0]}
cp real-gpu-reports/latest/summary.json "$out/summary.json" 2>/dev/null
echo "exit code: $rc" | tee -a "$out/pytest.txt"
hot=$(mktemp -d)
printf '[tool.gpu-conformance.health]\nmax_temperature_c = 1\n' > "$hot/pyproject.toml"
(cd "$hot" && python3 -m pytest "$repo/features/" --host-only --host-backend local -v -p no:cacheprovider --no-workload \
  --report-dir "$repo/real-gpu-reports-hot" -k "slowed_down" 2>&1) | tee "$out/pytest-impossible-threshold.txt"
echo "exit code: ${PIPESTATUS[0]}" | tee -a "$out/pytest-impossible-threshold.txt"
cp "$repo/real-gpu-reports-hot/latest/summary.json" "$out/summary-impossible-threshold.json" 2>/dev/null
# persistence, asked the two ways a user can pin it: the mode (nvidia-smi) and the daemon
printf '[tool.gpu-conformance.health]\npersistence_mode = "Enabled"\npersistenced = true\n' > "$hot/pyproject.toml"
(cd "$hot" && python3 -m pytest "$repo/features/" --host-only --host-backend local -v -p no:cacheprovider --no-workload \
  --report-dir "$repo/real-gpu-reports-persist" -k "persistence" 2>&1) | tee "$out/pytest-persistence.txt"
echo "exit code: ${PIPESTATUS[0]}" | tee -a "$out/pytest-persistence.txt"
# what the one health read per node costs on this host (HostAccess local, the suite's own code)
python3 - <<'PY' 2>&1 | tee "$out/health-read-timing.txt"
import time
from provision.hostfacts import health_read
from provision.hosts.access import HostAccess
from provision.hosts.spec import HostSpec
host = HostAccess(HostSpec(backend="local"), name="local")
times = []
for _ in range(5):
    t0 = time.monotonic(); read = health_read(host, 86400); times.append(time.monotonic() - t0)
print("health read parts:", {k: v[0] for k, v in read.parts.items()})
print("health read seconds:", [round(t, 3) for t in times])
PY
exit "$rc"
