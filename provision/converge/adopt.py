"""Taking over a GPU Operator release that someone else installed (the original playbooks, chart defaults, a
`helm install` by hand): the suite's chart values merged into the release's own, and what changes and what
is left alone said in words. Pure: the operator-release converger reads the release and applies the result.

Merge rules: mappings merge key by key, the suite's leaves win; `toolkit.env` (a list of name/value pairs)
merges by name, the release's other variables kept in their order. Values the suite does not set are kept, with
a note where the real operator or chart ignores or overrides them (gpu-stack.md, controllers/object_controls.go).
"""

from __future__ import annotations

import copy
from typing import Any

TRUE = ("1", "true", "yes", "on")
# Values the release may carry that do nothing or are overridden, and why (said when they are kept).
NO_EFFECT = {
    "toolkit.env RUNTIME_DROP_IN_CONFIG_HOST_PATH": "no effect: the operator sets it from RUNTIME_DROP_IN_CONFIG",
    "toolkit.env CONTAINERD_RUNTIME_CLASS": "no effect: the operator sets it from operator.runtimeClass",
    "daemonsets.toolkit.volumes": "no effect: the chart does not template it",
}
SET_AS_DEFAULT = ("CONTAINERD_SET_AS_DEFAULT", "NVIDIA_RUNTIME_SET_AS_DEFAULT")
UNSET = object()


def _env(values: dict) -> list[dict]:
    return list(((values.get("toolkit") or {}).get("env")) or [])


def _leaves(values: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted path -> leaf value; toolkit.env as 'toolkit.env NAME' per variable."""
    out: dict[str, Any] = {}
    if not isinstance(values, dict):
        return {prefix: values} if prefix else {}
    for key, val in values.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if path == "toolkit.env" and isinstance(val, list):
            for e in val:
                if isinstance(e, dict) and "name" in e:
                    out[f"toolkit.env {e['name']}"] = e.get("value")
        elif isinstance(val, dict) and val:
            out.update(_leaves(val, path))
        else:
            out[path] = val
    return out


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, val in over.items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], val)
        else:
            out[key] = copy.deepcopy(val)
    return out


def _show(value: Any) -> str:
    return "unset" if value is UNSET else repr(value)


def merge_values(user: dict, desired: dict, effective: dict | None = None) -> tuple[dict, list[str], list[str]]:
    """(merged values for `helm upgrade -f`, the changes in words, the release's values left alone in words).

    `user`: the release's own values (`helm get values`); `desired`: the suite's; `effective`: the release's
    values with the chart's defaults (`helm get values --all`), against which a change is judged (a chart
    default that already equals the suite's value is no change)."""
    effective = effective if effective is not None else user
    cdi_on = ((desired.get("cdi") or {}).get("enabled")) is not False
    want_env = {e["name"]: e for e in _env(desired)}
    env: list[dict] = []
    dropped: list[str] = []
    for e in _env(user):
        name = e.get("name")
        if name in want_env:
            env.append(copy.deepcopy(want_env.pop(name)))
        elif name in SET_AS_DEFAULT and str(e.get("value", "")).lower() in TRUE and not cdi_on:
            dropped.append(f"toolkit.env {name}: {e.get('value')!r} -> unset (it makes nvidia containerd's default "
                           "runtime with CDI off; the suite keeps runc the default)")
        else:
            env.append(copy.deepcopy(e))
    env += [copy.deepcopy(e) for e in want_env.values()]
    merged = _deep_merge(user, {k: v for k, v in desired.items() if k != "toolkit"})
    merged["toolkit"] = _deep_merge(user.get("toolkit") or {}, {k: v for k, v in (desired.get("toolkit") or {}).items()
                                                                 if k != "env"})
    merged["toolkit"]["env"] = env

    have, want = _leaves(effective), _leaves(desired)
    changes = [f"{path}: {_show(have.get(path, UNSET))} -> {value!r}" for path, value in want.items()
               if have.get(path, UNSET) != value] + dropped
    kept = []
    for path, value in _leaves(user).items():
        if path in want or any(d.startswith(path + ":") for d in dropped):
            continue
        why = NO_EFFECT.get(path)
        if path.removeprefix("toolkit.env ") in SET_AS_DEFAULT and cdi_on:
            why = "no effect while cdi.enabled=true: the operator sets NVIDIA_RUNTIME_SET_AS_DEFAULT=false"
        kept.append(f"{path}={value!r}" + (f" ({why})" if why else ""))
    return merged, changes, kept
