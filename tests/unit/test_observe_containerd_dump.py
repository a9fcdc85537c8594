"""provision/observe/containerd_dump.py: the verdict from the node's own `containerd config dump` (no I/O)."""

from __future__ import annotations

from provision.observe import containerd as ctd
from provision.observe.containerd_dump import Dump, parse, runtimes_verdict, versions_verdict

ROOT = "/var/lib/k8s-containerd/k8s-containerd/etc/containerd/config.toml"
ROOT_TEXT = """version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
runtime_type = "io.containerd.runc.v2"
"""
# shaped like containerd 1.7's dump: every plugin's config, the CRI runtimes under its containerd table
DUMP_OK = ROOT_TEXT + """[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
runtime_type = "io.containerd.runc.v2"
"""
DUMP_NO_RUNC = """version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
runtime_type = "io.containerd.runc.v2"
"""


def _eff(text: str = ROOT_TEXT) -> ctd.EffectiveConfig:
    return ctd.resolve(ROOT, {ROOT: text})


def test_parse_reads_runtimes_and_default() -> None:
    cfg = parse(DUMP_OK)
    assert cfg.version == 2 and cfg.cri_plugin == "io.containerd.grpc.v1.cri"
    assert cfg.runtimes == ("nvidia", "runc") and cfg.default_runtime == "runc"
    v3 = parse('version = 3\n[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]\nx = 1\n')
    assert v3.cri_plugin == "io.containerd.cri.v1.runtime" and v3.runtimes == ("runc",)


def test_node_verdict_wins_over_the_resolver() -> None:
    v = runtimes_verdict(Dump(ran=True, stdout=DUMP_NO_RUNC), _eff())
    assert not v.ok and v.source == "node"
    assert any("no corresponding runtime configured in `containerd.runtimes`" in p for p in v.problems)
    assert any("the node's containerd wins" in n for n in v.notes)        # the resolver saw runc only
    ok = runtimes_verdict(Dump(ran=True, stdout=DUMP_OK), _eff())
    assert ok.ok and ok.runtimes == ("nvidia", "runc")


def test_a_refusing_containerd_fails_with_its_own_text() -> None:
    err = "containerd: failed to load TOML from /x: expected containerd config version equal to or less than `3`, got `4`"
    d = Dump(ran=True, rc=1, stderr="time=... level=warning msg=x\n" + err + "\n")
    v = runtimes_verdict(d, _eff(DUMP_OK))
    assert not v.ok and v.problems == [f"the node's containerd refuses its configuration: {err[len('containerd: '):]}"]
    assert v.notes == ["the suite's resolver saw no error here; the node's containerd wins"]
    assert not versions_verdict(d, {}).ok
    assert versions_verdict(Dump(ran=True, stdout=DUMP_OK), {"/d.toml": 4}).ok     # accepted by the node


def test_fallback_to_the_resolver_says_so() -> None:
    v = runtimes_verdict(Dump(ran=False, why="chroot: cannot change root directory"), _eff(DUMP_OK))
    assert v.ok and v.source == "resolver"
    assert v.notes == ["containerd config dump could not run on the node (chroot: cannot change root directory): "
                       "verdict from the suite's resolver"]
    bad = runtimes_verdict(Dump(ran=False, why="x"), _eff(DUMP_NO_RUNC))
    assert not bad.ok and "no runc runtime" in bad.problems


def test_cri_disabled_is_a_failure() -> None:
    v = runtimes_verdict(Dump(ran=True, stdout='version = 2\ndisabled_plugins = ["cri"]\n'), None)
    assert not v.ok and "CRI plugin is disabled" in v.problems[0]
