"""provision/names.py agrees with the real kube-apiserver: every name is created (server-side dry run, nothing
is stored) as a Node (a DNS-1123 subdomain) and as a Namespace (a DNS-1123 label), and the apiserver's verdict
must be the module's."""

from __future__ import annotations

import pytest
from kubernetes import client

from provision.names import is_dns1123_label, is_dns1123_subdomain

pytestmark = pytest.mark.lab

NAMES = ["gpu-1", "a", "0", "n" * 63, "n" * 64, "a" * 64 + ".example", ".".join(["a" * 63] * 3) + "." + "b" * 61,
         "a." * 126 + "ab", "GPU-1", "-gpu", "gpu-", "gpu_1", "gpu..1", ".gpu", "gpu.", "gpu a", "gpü"]


def _accepted(create, name: str) -> bool:
    try:
        create({"metadata": {"name": name}}, dry_run="All")
    except client.ApiException as exc:
        assert exc.status == 422, f"{name!r}: unexpected {exc.status}: {exc.body}"
        return False
    return True


@pytest.mark.parametrize("name", NAMES)
def test_names_module_agrees_with_the_apiserver(lab, name: str):
    core = client.CoreV1Api(lab.api("admin_kubeconfig"))
    assert is_dns1123_subdomain(name) == _accepted(core.create_node, name), f"node name {name!r}"
    assert is_dns1123_label(name) == _accepted(core.create_namespace, name), f"namespace {name!r}"
