#!/bin/bash
# The suite's OCI image, from Debian's packages (mmdebstrap) and the project's own files, assembled with umoci:
# no base image from a registry. Usage:
#
#   deploy/image/build.sh OUT_DIR        # -> OUT_DIR/oci: an OCI image layout, tag gpu-node-conformance:<version>
#
# In the image: Debian bookworm (minbase) with python3 and nodejs, the committed tree at /opt/gpu-node-conformance
# (git archive HEAD), its Python dependencies in /opt/gpu-node-conformance/.venv (pip, PyPI), node_modules from the
# checkout (`npm ci` of package-lock.json: the Allure 3 CLI), helm from the lab binaries (make lab-binaries).
# Entry point: python -m provision.reporting.nightly (the chart's CronJob), user 65532. Needs root, mmdebstrap, umoci.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=$(realpath -m "${1:?usage: deploy/image/build.sh OUT_DIR}")
suite=${SUITE_DIR:-/opt/gpu-node-conformance}
helm=${HELM:-$("$repo/.venv/bin/python" -c 'from lab import versions; print(versions.bin_dir() / "helm")')}
read -r name version < <("$repo/.venv/bin/python" -c 'import tomllib; p = tomllib.load(open("'"$repo"'/pyproject.toml", "rb"))["project"]; print(p["name"], p["version"])')
for need in mmdebstrap umoci git; do
  command -v "$need" >/dev/null || { echo "build.sh: $need is missing (Debian package $need)" >&2; exit 2; }
done
[ -x "$helm" ] || { echo "build.sh: no helm at $helm: run make lab-binaries (or set HELM)" >&2; exit 2; }
[ -x "$repo/node_modules/.bin/allure" ] || { echo "build.sh: node_modules is missing: run make npm-packages" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git -C "$repo" archive --format=tar HEAD > "$work/src.tar"
# The Python dependencies as wheels, fetched by this machine's own pip (its index and certificate set-up),
# installed in the root filesystem from that folder only (the image's Python is Debian bookworm's 3.11 too).
"$repo/.venv/bin/pip" wheel --quiet --wheel-dir "$work/wheels" "$repo"
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,nodejs,ca-certificates \
  --customize-hook="mkdir -p \"\$1$suite\" && tar -C \"\$1$suite\" -xf $work/src.tar" \
  --customize-hook="cp -a $repo/node_modules \"\$1$suite/\"" \
  --customize-hook="install -m 755 $helm \"\$1/usr/local/bin/helm\"" \
  --customize-hook="chroot \"\$1\" python3 -m venv $suite/.venv" \
  --customize-hook="cp -r $work/wheels \"\$1/tmp/wheels\"" \
  --customize-hook="chroot \"\$1\" $suite/.venv/bin/pip install --no-cache-dir --quiet --no-index --find-links /tmp/wheels $name" \
  --customize-hook="rm -rf \"\$1/tmp/wheels\"" \
  --customize-hook="chroot \"\$1\" useradd --uid 65532 --user-group --home-dir /tmp --no-create-home audit" \
  --customize-hook="rm -rf \"\$1/var/lib/apt/lists\"/* \"\$1/var/cache/apt\"/*" \
  bookworm "$work/rootfs.tar"

image="$out/oci:gpu-node-conformance-$version"
rm -rf "$out/oci"
mkdir -p "$out"
umoci init --layout "$out/oci"
umoci new --image "$image"
umoci unpack --image "$image" "$work/bundle"
tar -C "$work/bundle/rootfs" -xf "$work/rootfs.tar"
umoci repack --image "$image" "$work/bundle"
umoci config --image "$image" --config.user 65532:65532 --config.workingdir "$suite" \
  --config.env "PATH=$suite/.venv/bin:/usr/local/bin:/usr/bin:/bin" --config.env HOME=/tmp \
  --config.entrypoint python --config.entrypoint -m --config.entrypoint provision.reporting.nightly
umoci gc --layout "$out/oci"
echo "$image"
