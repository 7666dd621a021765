"""The Helm chart: rendered by Helm's own engine (helm-python-sdk), linted, every manifest
validated against the Kubernetes schemas, and the properties pinned-CPU nodes need checked
for a matrix of values; combinations that cannot work must fail rendering with a message."""

from __future__ import annotations

import base64
import json
import re
import shutil
import tarfile
import tempfile
import tomllib
from pathlib import Path

import helm_python
import kubernetes_validate
import pytest
import yaml

from conftest import CHART, REPO, chart_values, render, render_error

POSTGRES = {"database": {"existingSecret": "openchat-db", "existingSecretKey": "url"}}
NATS = {"cluster": {"nats": {"existingSecret": "openchat-nats"}}}
SEVERAL = {
    **POSTGRES,
    **NATS,
    "replicaCount": 3,
    "media": {"hostNetwork": True, "portBase": 40000},
    "persistence": {"accessModes": ["ReadWriteMany"]},
}

# name -> values. Each case is rendered, schema-validated and checked for the invariants.
MATRIX = {
    "defaults": {},
    "postgres": POSTGRES,
    "postgres-url-in-values": {"database": {"url": "postgres://openchat:pw@db:5432/openchat"}},
    "hostnetwork": {"media": {"hostNetwork": True, "portBase": 50000}},
    "several-replicas": SEVERAL,
    "gateway-created": {
        "gateway": {"enabled": True, "gateway": {"create": True, "className": "cilium"}},
    },
    "gateway-existing-parent": {"gateway": {"enabled": True}},
    "autoscaling": {
        **SEVERAL,
        "autoscaling": {"enabled": True, "maxReplicas": 4, "targetMemoryUtilizationPercentage": 70},
    },
    "loadbalancer": {
        "media": {
            "portBase": 50000,
            "publicIP": "203.0.113.7",
            "service": {"type": "LoadBalancer", "loadBalancerIP": "203.0.113.7"},
        }
    },
    "four-cores": {"resources": {"requests": {"cpu": "4000m", "memory": "4Gi"}, "limits": {"cpu": "4000m", "memory": "4Gi"}}},
    "three-shards-of-four": {
        "media": {"shards": 3},
        "resources": {"requests": {"cpu": 4, "memory": "2Gi"}, "limits": {"cpu": 4, "memory": "2Gi"}},
    },
    "seccomp-localhost": {"seccomp": {"type": "Localhost"}},
    "ipc-lock": {"memlock": {"ipcLock": True}},
    "service-monitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}},
    "no-persistence": {"persistence": {"enabled": False}},
    "existing-claim-and-secrets": {
        **POSTGRES,
        "persistence": {"existingClaim": "openchat-data"},
        "joinTicket": {"existingSecret": "openchat-tickets"},
    },
    "image-tag": {"image": {"tag": "v0.1.0"}},
}

CRD_KINDS = {"Gateway", "HTTPRoute", "ServiceMonitor"}
K8S_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]


def merged(values: dict) -> dict:
    """values.yaml overlaid with `values` (what the templates see)."""

    def merge(base, over):
        if isinstance(base, dict) and isinstance(over, dict):
            out = dict(base)
            for key, value in over.items():
                out[key] = merge(base.get(key), value)
            return out
        return over

    return merge(chart_values(), values)


def cpu_count(quantity) -> int:
    text = str(quantity)
    return int(text[:-1]) // 1000 if text.endswith("m") else int(text)


def check_invariants(rendered, values: dict) -> None:
    v = merged(values)
    pod, container, env = rendered.pod, rendered.container, rendered.env()

    # Guaranteed QoS with whole CPUs.
    resources = container["resources"]
    assert resources["requests"] == resources["limits"]
    cpus = cpu_count(resources["limits"]["cpu"])
    assert cpus >= 1 and str(resources["limits"]["cpu"]).rstrip("m").isdigit()

    # One UDP port per shard, consecutive from portBase; OPENCHAT_SHARDS says the same.
    shards = int(env["OPENCHAT_SHARDS"]["value"])
    assert shards == (int(v["media"]["shards"]) if str(v["media"]["shards"]) else cpus)
    assert 1 <= shards <= cpus
    base = v["media"]["portBase"]
    assert env["OPENCHAT_MEDIA_PORT_BASE"]["value"] == str(base)
    udp = [p for p in container["ports"] if p["protocol"] == "UDP"]
    assert [p["containerPort"] for p in udp] == list(range(base, base + shards))
    media_services = [s for s in rendered.all("Service") if s["metadata"]["name"].endswith("-media")]
    if v["media"]["hostNetwork"]:
        assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
        assert [p["hostPort"] for p in udp] == list(range(base, base + shards))
        assert media_services == []
    else:
        assert "hostNetwork" not in pod
        (media,) = media_services
        ports = media["spec"]["ports"]
        assert [p["port"] for p in ports] == list(range(base, base + shards))
        assert all(p["protocol"] == "UDP" and p["targetPort"] == p["port"] for p in ports)
        if media["spec"]["type"] == "NodePort":
            assert all(p["nodePort"] == p["port"] for p in ports)
        assert media["spec"]["selector"] == rendered.deployment["spec"]["selector"]["matchLabels"]

    # Secrets only by reference; the referenced Secret exists (rendered here or named by values).
    rendered_secrets = {s["metadata"]["name"]: s for s in rendered.all("Secret")}
    for name in ["OPENCHAT_JOIN_TICKET_SECRET", "OPENCHAT_DATABASE_URL"]:
        if name not in env:
            continue
        assert "value" not in env[name], f"{name} must come from a Secret"
        ref = env[name]["valueFrom"]["secretKeyRef"]
        if ref["name"] in rendered_secrets:
            assert ref["key"] in rendered_secrets[ref["name"]]["data"]
        else:
            assert ref["name"] in (v["database"]["existingSecret"], v["joinTicket"]["existingSecret"])
    assert "OPENCHAT_JOIN_TICKET_SECRET" in env
    assert ("OPENCHAT_DATABASE_URL" in env) == bool(v["database"]["existingSecret"] or v["database"]["url"])
    for secret in rendered_secrets.values():
        assert secret.get("stringData") is None, "secret values are base64 data, not stringData"

    # Probes: liveness /healthz, readiness /readyz (which reflects the store).
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}

    # Security: non-root, no privilege escalation, every capability dropped (IPC_LOCK back only
    # when asked), a seccomp profile that permits io_uring unless the operator chose otherwise.
    sc = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["capabilities"].get("add", []) == (["IPC_LOCK"] if v["memlock"]["ipcLock"] else [])
    assert sc["seccompProfile"]["type"] == v["seccomp"]["type"]
    if v["seccomp"]["type"] == "Localhost":
        assert sc["seccompProfile"]["localhostProfile"] == v["seccomp"]["localhostProfile"]

    # The data directory is mounted where OPENCHAT_DATA_DIR points.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["data"] == env["OPENCHAT_DATA_DIR"]["value"] == v["persistence"]["mountPath"]

    # The embedded store (or host ports) never runs in two pods at once during a rollout.
    strategy = rendered.deployment["spec"]["strategy"]["type"]
    postgres = bool(v["database"]["existingSecret"] or v["database"]["url"])
    assert strategy == ("RollingUpdate" if postgres and not v["media"]["hostNetwork"] else "Recreate")

    # HPA owns replicas when enabled.
    hpa = rendered.maybe("HorizontalPodAutoscaler")
    assert (hpa is not None) == v["autoscaling"]["enabled"]
    assert ("replicas" in rendered.deployment["spec"]) == (not v["autoscaling"]["enabled"])


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_matrix_case_renders_validates_and_keeps_the_invariants(case):
    values = MATRIX[case]
    rendered = render(values)
    assert rendered.docs, "nothing rendered"
    for doc in rendered.docs:
        if doc["kind"] in CRD_KINDS:
            assert doc["apiVersion"].split("/")[0] in {"gateway.networking.k8s.io", "monitoring.coreos.com"}
            continue
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    check_invariants(rendered, values)


def test_lint_reports_no_errors_or_warnings():
    result = helm_python.lint(str(CHART), strict=True)
    assert result["errors"] == [], result
    serious = [m for m in result["messages"] if m["severity"] >= 2]
    assert serious == [], serious


def test_lint_reports_a_broken_template():

    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "openchat-backend"
        shutil.copytree(CHART, copy)
        (copy / "templates" / "broken.yaml").write_text("{{ .Values.nope.deeper }\n")
        result = helm_python.lint(str(copy))
        assert result["errors"] or any(m["severity"] >= 3 for m in result["messages"]), result


def test_default_install_pulls_the_image_ci_publishes_for_the_app_version():
    rendered = render()
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert rendered.container["image"] == f"ghcr.io/porthorian/openchat-backend/server:{chart['appVersion']}"
    assert render({"image": {"tag": "sha-0123456789ab"}}).container["image"].endswith(":sha-0123456789ab")


def test_chart_app_version_is_the_cargo_workspace_version():
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == cargo["workspace"]["package"]["version"]
    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", chart["version"])


def test_defaults_are_guaranteed_qos_with_one_shard_per_core_and_a_working_seccomp_profile():
    rendered = render()
    container, env = rendered.container, rendered.env()
    assert container["resources"]["requests"] == container["resources"]["limits"] == {"cpu": 2, "memory": "1Gi"}
    assert env["OPENCHAT_SHARDS"]["value"] == "2"
    assert container["securityContext"]["seccompProfile"] == {"type": "Unconfined"}
    assert "RuntimeDefault" not in yaml.safe_dump(rendered.docs)
    assert env["OPENCHAT_MEDIA_PUBLIC_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    assert rendered.one("PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert rendered.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert rendered.maybe("ServiceMonitor") is None and rendered.maybe("HTTPRoute") is None


def test_the_generated_ticket_secret_is_random_and_long():
    secret = render().one("Secret")
    value = base64.b64decode(secret["data"]["join-ticket-secret"]).decode()
    assert len(value) >= 32
    assert value != base64.b64decode(render().one("Secret")["data"]["join-ticket-secret"]).decode()
    given = render({"joinTicket": {"secret": "s" * 40}}).one("Secret")
    assert base64.b64decode(given["data"]["join-ticket-secret"]).decode() == "s" * 40


def test_a_database_url_in_values_goes_to_the_secret_not_the_pod_spec():
    url = "postgres://openchat:pw@db:5432/openchat"
    rendered = render({"database": {"url": url}})
    assert url not in yaml.safe_dump(rendered.deployment)
    assert base64.b64decode(rendered.one("Secret")["data"]["database-url"]).decode() == url


def test_existing_secrets_mean_the_chart_renders_no_secret():
    rendered = render(MATRIX["existing-claim-and-secrets"])
    assert rendered.all("Secret") == []
    env = rendered.env()
    assert env["OPENCHAT_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "openchat-db", "key": "url"}
    assert env["OPENCHAT_JOIN_TICKET_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "openchat-tickets",
        "key": "join-ticket-secret",
    }
    assert rendered.all("PersistentVolumeClaim") == []
    assert rendered.pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "openchat-data"


def test_gateway_route_sends_http_and_websockets_to_the_service():
    rendered = render(MATRIX["gateway-created"])
    gateway = rendered.one("Gateway")
    route = rendered.one("HTTPRoute")
    assert gateway["spec"]["gatewayClassName"] == "cilium"
    assert route["spec"]["parentRefs"][0]["name"] == gateway["metadata"]["name"]
    backend = route["spec"]["rules"][0]["backendRefs"][0]
    service = rendered.one("Service", "openchat-backend")
    assert backend == {"name": service["metadata"]["name"], "port": service["spec"]["ports"][0]["port"]}
    assert route["spec"]["rules"][0]["matches"][0]["path"] == {"type": "PathPrefix", "value": "/"}


def test_service_monitor_scrapes_metrics_on_the_http_port_only():
    monitor = render(MATRIX["service-monitor"]).one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_notes_warn_about_settings_that_break_media_or_urls():
    assert "OPENCHAT_PUBLIC_BASE_URL" in render().notes
    notes = render({"seccomp": {"type": "RuntimeDefault"}}).notes
    assert "block io_uring" in notes
    notes = render({"media": {"publicIPFromHostIP": False}}).notes
    assert "cannot reach" in notes
    assert "per pod" in render(SEVERAL).notes


def test_replicas_above_one_with_the_embedded_store_fail_rendering_with_a_clear_message():
    message = render_error({"replicaCount": 2})
    assert "replicaCount > 1 (or autoscaling) needs Postgres and NATS" in message
    assert "cluster.nats.existingSecret" in message
    assert "embedded SQLite store" in message


def test_replicas_above_one_without_nats_fail_naming_both():
    several = {k: v for k, v in SEVERAL.items() if k != "cluster"}
    message = render_error(several)
    assert "needs Postgres and NATS" in message
    assert "cluster.nats.existingSecret" in message and "database.existingSecret" in message


def container_env(rendered) -> dict:
    deployment = rendered.all("Deployment")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container["env"]}


def test_cluster_mode_passes_the_nats_url_from_its_secret_and_the_pod_name_as_node_id():
    env = container_env(render(SEVERAL))
    assert env["OPENCHAT_NATS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "openchat-nats", "key": "nats-url"}
    assert env["OPENCHAT_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["OPENCHAT_MEDIA_PUBLIC_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    assert env["OPENCHAT_DRAIN_SECONDS"]["value"] == "20"
    single = container_env(render(POSTGRES))
    assert "OPENCHAT_NATS_URL" not in single and "OPENCHAT_NODE_ID" not in single


REFUSED = {
    "autoscaling-with-embedded-store": ({"autoscaling": {"enabled": True}}, "needs Postgres"),
    "several-replicas-on-a-read-write-once-volume": (
        {**POSTGRES, **NATS, "replicaCount": 2, "media": {"hostNetwork": True}},
        "accessModes [ReadWriteMany]",
    ),
    "several-replicas-behind-one-udp-service": (
        {**POSTGRES, **NATS, "replicaCount": 2, "persistence": {"accessModes": ["ReadWriteMany"]}},
        "needs media.hostNetwork=true",
    ),
    "fractional-cpu": (
        {"resources": {"requests": {"cpu": "1500m", "memory": "1Gi"}, "limits": {"cpu": "1500m", "memory": "1Gi"}}},
        "not a whole number of CPUs",
    ),
    "requests-below-limits": (
        {"resources": {"requests": {"cpu": 1, "memory": "1Gi"}, "limits": {"cpu": 2, "memory": "1Gi"}}},
        "must equal resources.limits",
    ),
    "more-shards-than-cores": ({"media": {"shards": 3}}, "between 1 and the CPU limit (2)"),
    "node-port-outside-the-range": ({"media": {"portBase": 50000}}, "node-port range 30000-32767"),
    "ticket-secret-in-plain-env": ({"env": {"OPENCHAT_JOIN_TICKET_SECRET": "x"}}, "use joinTicket.existingSecret"),
    "database-url-in-plain-env": ({"env": {"OPENCHAT_DATABASE_URL": "postgres://x"}}, "use database.existingSecret"),
    "nats-url-in-plain-env": ({"env": {"OPENCHAT_NATS_URL": "nats://x"}}, "use cluster.nats.existingSecret"),
    "nats-without-postgres": ({**NATS}, "cluster.nats needs Postgres"),
    "drain-longer-than-the-grace": (
        {**SEVERAL, "cluster": {**NATS["cluster"], "drainSeconds": 25}},
        "terminationGracePeriodSeconds 30 must be at least cluster.drainSeconds + 10 (35)",
    ),
    "nats-url-with-credentials-in-values": (
        {**POSTGRES, "cluster": {"nats": {"url": "nats://user:pw@nats:4222"}}},
        "/cluster/nats/url",
    ),
    "shards-in-env": ({"env": {"OPENCHAT_SHARDS": "4"}}, "use media.shards"),
    "route-without-a-gateway": ({"gateway": {"enabled": True, "parentRefs": []}}, "needs gateway.parentRefs"),
    "created-gateway-without-a-class": ({"gateway": {"enabled": True, "gateway": {"create": True}}}, "className is required"),
    "load-balancer-without-its-address": (
        {"media": {"portBase": 50000, "service": {"type": "LoadBalancer"}}},
        "LoadBalancer needs media.publicIP",
    ),
    "public-ip-that-is-not-an-ip": ({"media": {"publicIP": "media.example.org"}}, "/media/publicIP"),
    "unknown-top-level-key": ({"replicas": 2}, "additional properties 'replicas' not allowed"),
    "wrong-type": ({"replicaCount": "two"}, "want integer"),
    "seccomp-in-security-context": (
        {"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}},
        "/securityContext",
    ),
    "unknown-seccomp-type": ({"seccomp": {"type": "Whatever"}}, "/seccomp/type"),
    "short-ticket-secret": ({"joinTicket": {"secret": "short"}}, "/joinTicket/secret"),
    "media-port-clash-with-http": (
        {"containerPort": 40001, "media": {"hostNetwork": True, "portBase": 40000}},
        "overlap containerPort",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_invalid_values_fail_rendering_naming_the_problem(case):
    values, expected = REFUSED[case]
    message = render_error(values)
    assert expected in message, message


def leaf_keys(values, prefix=""):
    if isinstance(values, dict) and values:
        for key, value in values.items():
            yield from leaf_keys(value, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix


def test_chart_readme_documents_every_value():
    readme = (CHART / "README.md").read_text()
    missing = [key for key in leaf_keys(chart_values()) if f"`{key}`" not in readme]
    assert missing == [], f"values not in charts/openchat-backend/README.md: {missing}"


def test_every_value_has_a_schema_entry():
    schema = json.loads((CHART / "values.schema.json").read_text())

    def covered(path: str) -> bool:
        node = schema
        for part in path.split("."):
            props = node.get("properties", {})
            if part in props:
                node = props[part]
            elif "properties" not in node and node.get("type") == "object":
                return True  # a free-form map (annotations, podSecurityContext, ...)
            elif isinstance(node.get("additionalProperties"), dict):
                return True  # a map whose values have a schema (env)
            else:
                return False
        return True

    missing = [key for key in leaf_keys(chart_values()) if not covered(key)]
    assert missing == [], missing


def test_the_packaged_chart_holds_what_the_release_publishes_and_renders(tmp_path):
    """What publish-helm-chart.yml does (`helm package --version X.Y.Z`), with Helm's engine:
    the archive carries the templates, schema, README and seccomp profile, nothing else,
    and renders like the directory."""
    archive = helm_python.package(str(CHART), destination=str(tmp_path), version="0.2.0")
    assert archive.endswith("openchat-backend-0.2.0.tgz"), archive
    with tarfile.open(archive) as tar:
        names = sorted(n.removeprefix("openchat-backend/") for n in tar.getnames())
    expected_templates = sorted(p.name for p in (CHART / "templates").iterdir())
    assert [n for n in names if n.startswith("templates/")] == [f"templates/{t}" for t in expected_templates]
    for name in ["Chart.yaml", "values.yaml", "values.schema.json", "README.md", "files/seccomp-io-uring.json"]:
        assert name in names, names
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/") or n.endswith((".swp", ".pyc"))]
    packaged = helm_python.Chart.load_archive(Path(archive).read_bytes())
    files = packaged.render({}, name="oc", namespace="chat", is_install=True)
    assert any("kind: Deployment" in text for text in files.values())
