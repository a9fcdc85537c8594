"""Kubernetes object names: the DNS-1123 rules, one home for them.

As Kubernetes' own validation (k8s.io/apimachinery/pkg/util/validation: IsDNS1123Label, IsDNS1123Subdomain)
defines them: a label is at most 63 lowercase alphanumerics or '-', starting and ending with an alphanumeric
(namespaces, label values of that form); a subdomain is at most 253 characters of such labels joined by '.'
(node names, ConfigMaps). A subdomain's parts are NOT limited to 63 characters each: the apiserver accepts
a node named with a 64-character part (checked against the lab's kube-apiserver v1.34.4).
"""

from __future__ import annotations

import re

LABEL_MAX = 63
SUBDOMAIN_MAX = 253
_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
LABEL = re.compile(_LABEL)
SUBDOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def is_dns1123_label(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= LABEL_MAX and LABEL.fullmatch(value) is not None


def is_dns1123_subdomain(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= SUBDOMAIN_MAX and SUBDOMAIN.fullmatch(value) is not None
