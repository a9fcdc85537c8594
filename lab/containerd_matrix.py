"""The k8s-snap track x toolkit version matrix, measured with the real programs (docs/containerd.md).

``python -m lab.containerd_matrix [--out FILE]`` seeds throw-away host views (no Kubernetes; root needed for the
chroots) for every k8s-snap track the lab builds containerd for, with and without Docker, runs the real toolkit
installer's containerd setup of each toolkit version with each config source and drop-in location, and prints a
Markdown table: the drop-in written (path, version, runtimes), whether the snap's containerd then starts (the
judge), and the suite's verdict (the node's own ``containerd config dump``, as the containerd check reads it).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
import tomllib
from pathlib import Path

from lab import build_node
from lab.spec import load
from lab.state import LabPaths
from lab.twin import containerd, hostview, seeding, toolkit

B = "/var/lib/k8s-containerd/k8s-containerd"
TOOLKIT_IMAGES = {"v26.3 (v1.19.0)": "nvcr.io/nvidia/k8s/container-toolkit:v1.19.0",
                  "v26.7 (v1.20.0)": "nvcr.io/nvidia/k8s/container-toolkit:v1.20.0"}
SOURCES = {"command,file (default)": None, "file": "file"}
DROP_INS = {"/etc/containerd/conf.d (playbooks)": None, "snap conf.d (suite)": f"{B}/etc/containerd/conf.d/99-nvidia.toml"}


def _cell(root: Path, image: str, source: str | None, dropin: str | None) -> dict:
    from provision.hostfacts import containerd_dump, containerd_facts
    from provision.hosts.access import HostAccess
    from provision.hosts.spec import HostSpec
    from provision.observe import containerd_dump as dump_mod

    env = {"CONTAINERD_CONFIG": f"{B}/etc/containerd/config.toml", "CONTAINERD_SOCKET": f"{B}/run/containerd/containerd.sock"}
    if source:
        env["RUNTIME_CONFIG_SOURCE"] = source
    if dropin:
        env["RUNTIME_DROP_IN_CONFIG"] = dropin
    try:
        toolkit.toolkit_install(root, env, cdi_enabled=True, image=image)
    except toolkit.ToolkitError as exc:
        return {"dropin": f"toolkit fails: {exc}", "starts": "-", "suite": "-"}
    rec = (hostview.read_json(root / ".twin/toolkit.json") or {})["last"]
    try:
        version = tomllib.loads(hostview.host_path(root, rec["dropin"]).read_text()).get("version")
    except (FileNotFoundError, tomllib.TOMLDecodeError):
        version = "?"
    st = containerd.state(root)
    host = HostAccess(HostSpec(backend="lab", root=str(root), exec_mode="path"), name=root.name)
    facts = containerd_facts(host)
    v = dump_mod.runtimes_verdict(containerd_dump(host, facts), facts.effective, facts.error)
    starts = "yes: " + ", ".join(st["runtimes"]) + f" (default {st['default_runtime']})" if st["running"] else \
        f"**no**: {st['error']}"
    suite = ("pass" if v.ok else "fail: " + "; ".join(v.problems)) + (" [" + "; ".join(v.notes) + "]" if v.notes else "")
    return {"dropin": f"{rec['dropin']} v{version}: {', '.join(rec['runtimes'])}", "starts": starts, "suite": suite,
            "agree": set(v.runtimes) == set(st["runtimes"] if st["running"] or st["runtimes"] else [])}


def measure() -> list[dict]:
    base = {n.name: n for n in load().nodes}
    rows = []
    with tempfile.TemporaryDirectory(prefix="ctd-matrix-") as tmp:
        paths = LabPaths(root=Path(tmp))
        i = 0
        for track in sorted(build_node.CONTAINERD_FOR_TRACK):
            if track == "1.33":
                continue     # same containerd as 1.34
            for docker in (False, True):
                for tk, image in TOOLKIT_IMAGES.items():
                    for src_name, src in SOURCES.items():
                        for d_name, dropin in DROP_INS.items():
                            i += 1
                            node = dataclasses.replace(base["spark-1" if docker else "gpu-a"], name=f"m{i}",
                                                       k8s_snap_track=track, containerd_version="")
                            root = seeding.seed(paths, node)
                            started = time.monotonic()
                            cell = _cell(root, image, src, dropin)
                            rows.append({"track": f"{track} (containerd {node.containerd_version})",
                                         "docker": "yes" if docker else "no", "toolkit": tk, "source": src_name,
                                         "dropin_dir": d_name, "s": round(time.monotonic() - started, 2), **cell})
    return rows


def markdown(rows: list[dict]) -> str:
    head = "| track | Docker | toolkit | config source | drop-in setting | drop-in written | containerd starts | suite |\n"
    head += "|---|---|---|---|---|---|---|---|\n"
    return head + "".join(f"| {r['track']} | {r['docker']} | {r['toolkit']} | {r['source']} | {r['dropin_dir']} | "
                          f"{r['dropin']} | {r['starts']} | {r['suite']} |\n" for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.containerd_matrix")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rows = measure()
    text = markdown(rows)
    if args.out:
        args.out.write_text(text)
    print(text)
    bad = [r for r in rows if r.get("agree") is False]
    print(f"{len(rows)} cells, {sum(r['s'] for r in rows):.1f}s; the suite's runtimes (node's config dump) differ "
          f"from containerd's (judge) in {len(bad)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
