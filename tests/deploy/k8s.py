"""Helpers over rendered manifests: finding objects, the workload and its pod, and the environment a
container would see (ConfigMap, downward API, `$(VAR)` expansion as the kubelet does it)."""

from __future__ import annotations

import re
from pathlib import Path

WORKLOADS = ("Deployment", "StatefulSet")


def kinds(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in kinds(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def workload(docs: list[dict]) -> dict:
    (found,) = [d for d in docs if d["kind"] in WORKLOADS]
    return found


def container(docs: list[dict]) -> dict:
    (found,) = workload(docs)["spec"]["template"]["spec"]["containers"]
    return found


def generated(docs: list[dict], kind: str, base_name: str) -> dict:
    """A ConfigMap or Secret kustomize generated from `base_name` (its name carries a content hash)."""
    (found,) = [
        d for d in kinds(docs, kind) if re.fullmatch(rf"{re.escape(base_name)}-[a-z0-9]{{10}}", d["metadata"]["name"])
    ]
    return found


_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, defined: dict[str, str]) -> str:
    """Kubernetes' dependent environment variables: `$(NAME)` of a variable defined before is replaced,
    `$$` is a literal `$`, an undefined reference is left as it is."""

    def replace(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return defined.get(name, m.group(0))

    return _REF.sub(replace, value)


def container_environment(
    docs: list[dict], pod_name: str, secrets: dict[tuple[str, str], str], owner: dict | None = None
) -> dict[str, str]:
    """The environment of the container of the workload (or of `owner`, a Job) in the pod named
    `pod_name`, as the kubelet builds it: envFrom ConfigMaps first, then `env` in order (values expanded
    against what is defined so far)."""
    env: dict[str, str] = {}
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in kinds(docs, "ConfigMap")}
    (c,) = (owner or workload(docs))["spec"]["template"]["spec"]["containers"]
    for source in c.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(var["value"], env)
            continue
        ref = var["valueFrom"]
        if "fieldRef" in ref:
            field = ref["fieldRef"]["fieldPath"]
            assert field == "metadata.name", f"no model of the downward API field {field}"
            env[var["name"]] = pod_name
        elif "secretKeyRef" in ref:
            key = (ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
            env[var["name"]] = secrets[key]
        else:
            raise AssertionError(f"no model of {ref}")
    return env


def mounted_files(
    docs: list[dict], root: Path, secrets: dict[tuple[str, str], str], owner: dict | None = None
) -> dict[str, Path]:
    """Lay out the container's volume mounts (the workload's, or `owner`'s) under `root` (ConfigMap and
    Secret items as files, every key without items; emptyDirs as folders) and return mount path ->
    folder, so settings can be loaded against them."""
    pod = (owner or workload(docs))["spec"]["template"]["spec"]
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in kinds(docs, "ConfigMap")}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts: dict[str, Path] = {}
    (c,) = pod["containers"]
    for mount in c["volumeMounts"]:
        folder = root / mount["mountPath"].lstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            data = configmaps[volume["configMap"]["name"]]
            items = volume["configMap"].get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                (folder / item["path"]).write_text(data[item["key"]])
        elif "secret" in volume:
            for item in volume["secret"]["items"]:
                (folder / item["path"]).write_text(secrets[(volume["secret"]["secretName"], item["key"])])
        else:
            assert "emptyDir" in volume, volume
        mounts[mount["mountPath"]] = folder
    return mounts


def relocate(env: dict[str, str], mounts: dict[str, Path]) -> dict[str, str]:
    """The environment with every path under a mount rewritten to the folder `mounted_files` made."""
    out = {}
    for name, value in env.items():
        for mount_path, folder in mounts.items():
            if value.startswith(mount_path.rstrip("/") + "/"):
                value = str(folder) + value[len(mount_path.rstrip("/")) :]
                break
        out[name] = value
    return out


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions) against a set of labels."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True
