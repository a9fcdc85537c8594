"""Label keys and values the suite puts on what it creates: one home for them (no Kubernetes client needed)."""

MANAGED_BY = "app.kubernetes.io/managed-by"   # the key
SUITE = "gpu-node-conformance"                # its value on every object the suite creates
