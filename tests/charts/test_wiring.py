"""Wiring that rendering alone cannot catch, checked on every pod of every configuration
(the chart's Deployments and examples/arc-values.yaml's pod): probes on declared ports,
the store and the socket where they belong, read-only where job code is, the tool cache
and work at one path in the runner and the engine, secrets kept from job code."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.charts import support

STORE = "/var/lib/runner-agent/store"
STORE_IN_TOOL_CACHE = "/home/runner/_work/_tool/.runner-agent-store"
TOOL_CACHE = "/home/runner/_work/_tool"
WORK = "/home/runner/_work"
SOCKET = "/run/runner-agent"

PODS = [
    (name, pod)
    for name in sorted(support.CONFIGURATIONS)
    for pod in sorted(support.render(name).pod_specs())
]


def spec_of(config: str, pod: str) -> dict[str, Any]:
    return support.render(config).pod_specs()[pod]


def long_running(spec: dict[str, Any]) -> list[dict[str, Any]]:
    sidecars = [c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"]
    return sidecars + spec["containers"]


def container(spec: dict[str, Any], name: str) -> dict[str, Any] | None:
    for each in spec.get("initContainers", []) + spec["containers"]:
        if each["name"] == name:
            return each
    return None


def volume_of(spec: dict[str, Any], name: str) -> dict[str, Any]:
    [volume] = [v for v in spec["volumes"] if v["name"] == name]
    return volume


def mounts(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in c.get("volumeMounts", [])}


def secret_keys(spec: dict[str, Any], c: dict[str, Any]) -> set[str]:
    """The (secret, key) pairs a container can read through its mounts and env."""
    found: set[str] = set()
    for m in c.get("volumeMounts", []):
        volume = volume_of(spec, m["name"])
        sources = [volume] + [s for s in volume.get("projected", {}).get("sources", [])]
        for source in sources:
            secret = source.get("secret")
            if not secret:
                continue
            name = secret.get("secretName") or secret.get("name")
            items = secret.get("items")
            keys = [i["key"] for i in items] if items else ["*"]
            found |= {f"{name}/{key}" for key in keys}
    for env in c.get("env", []):
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            found.add(f"{ref['name']}/{ref['key']}")
    for source in c.get("envFrom", []):
        if "secretRef" in source:
            found.add(f"{source['secretRef']['name']}/*")
    return found


@pytest.mark.parametrize(("config", "pod"), PODS)
def test_every_long_running_container_has_resources_security_and_probes_on_its_ports(
    config: str, pod: str
) -> None:
    spec = spec_of(config, pod)
    for c in long_running(spec) + spec.get("initContainers", []):
        assert c.get("resources", {}).get("limits", {}).get("memory"), (pod, c["name"])
        assert c.get("securityContext"), (pod, c["name"])
    for c in long_running(spec):
        ports = {p["name"] for p in c.get("ports", [])} | {
            p["containerPort"] for p in c.get("ports", [])
        }
        probes = [c[k] for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in c]
        if c["name"] == "runner":
            assert probes == [], "the runner has no port; ARC judges it by its exit"
            continue
        assert len(probes) == 3, (pod, c["name"])
        for probe in probes:
            assert probe["httpGet"]["port"] in ports, (pod, c["name"], probe)
        assert c["startupProbe"]["httpGet"]["path"] == "/readyz?exclude=gpu"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        # Lenient liveness: at least a minute of failures before a restart.
        live = c["livenessProbe"]
        assert live["periodSeconds"] * live["failureThreshold"] >= 60
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        assert env["RUNNER_AGENT_ON_CONFIG_ERROR"] == "degrade"
        address = env["RUNNER_AGENT_SERVER__METRICS_ADDRESS"]
        assert address.startswith("0.0.0.0:")
        assert int(address.rsplit(":", 1)[1]) in ports


@pytest.mark.parametrize(("config", "pod"), PODS)
def test_the_store_and_the_socket_are_where_they_belong(config: str, pod: str) -> None:
    spec = spec_of(config, pod)
    agent = container(spec, "runner-agent")
    assert agent is not None
    assert agent.get("restartPolicy") == ("Always" if pod != "runner-agent-warmer" else None)
    agent_mounts = mounts(agent)
    assert agent_mounts[STORE]["name"] == "store"
    assert not agent_mounts[STORE].get("readOnly")
    assert agent_mounts[SOCKET]["name"] == "socket"
    assert not agent_mounts[SOCKET].get("readOnly")
    assert "persistentVolumeClaim" in volume_of(spec, "store")
    assert "emptyDir" in volume_of(spec, "socket")
    assert spec["securityContext"]["fsGroup"] == 123
    assert spec["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    assert not spec.get("shareProcessNamespace")
    runner, engine = container(spec, "runner"), container(spec, "engine")
    if pod == "runner-agent-warmer":
        assert runner is None
        assert engine is None
        return
    assert runner is not None
    assert engine is not None
    for c in (runner, engine):
        m = mounts(c)
        assert m[STORE_IN_TOOL_CACHE]["name"] == "store"
        assert m[STORE_IN_TOOL_CACHE]["readOnly"]
        assert m[SOCKET]["name"] == "socket"
        assert m[SOCKET]["readOnly"]
        assert STORE not in m
        # Nothing else of the store, read-write, anywhere.
        assert all(x["readOnly"] for x in c["volumeMounts"] if x["name"] == "store")
    runner_env = {e["name"]: e.get("value") for e in runner["env"]}
    assert runner_env["RUNNER_AGENT_SOCKET"] == SOCKET + "/api.sock"


@pytest.mark.parametrize(("config", "pod"), [p for p in PODS if p[1] != "runner-agent-warmer"])
def test_tool_cache_and_work_are_pod_local_at_one_path_in_runner_and_engine(
    config: str, pod: str
) -> None:
    spec = spec_of(config, pod)
    runner, engine = container(spec, "runner"), container(spec, "engine")
    assert runner is not None
    assert engine is not None
    for path in (WORK, TOOL_CACHE, "/run"):
        assert mounts(runner)[path]["name"] == mounts(engine)[path]["name"], path
    assert "emptyDir" in volume_of(spec, mounts(runner)[TOOL_CACHE]["name"])
    assert "emptyDir" in volume_of(spec, mounts(runner)[WORK]["name"])
    assert engine["securityContext"]["privileged"] is True
    assert runner["securityContext"]["runAsUser"] == 1001
    agent = container(spec, "runner-agent")
    assert agent is not None
    if config == "everything":  # the sandboxed mode
        assert agent["securityContext"]["runAsUser"] == 0
        assert "SYS_ADMIN" in agent["securityContext"]["capabilities"]["add"]
    else:
        assert agent["securityContext"]["runAsUser"] == 10001
        assert agent["securityContext"]["runAsNonRoot"] is True
        assert agent["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert agent["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize(("config", "pod"), PODS)
def test_job_code_gets_no_admin_token_and_no_github_credential(config: str, pod: str) -> None:
    spec = spec_of(config, pod)
    agent = container(spec, "runner-agent")
    assert agent is not None
    agent_keys = secret_keys(spec, agent)
    assert "runner-agent-tokens/*" in agent_keys  # job and admin
    for name in ("runner", "engine"):
        c = container(spec, name)
        if c is None:
            continue
        keys = secret_keys(spec, c)
        # The job token, and no other secret: not the admin token, not GitHub's, not
        # the registration token.
        assert keys <= {"runner-agent-tokens/job"}, (name, keys)
        if name == "engine":
            assert keys == {"runner-agent-tokens/job"}
        # Nor what an init container minted or registered with.
        assert not {m["name"] for m in c["volumeMounts"]} & {"registration", "github"}
    github = {k for k in agent_keys if k.startswith("github-")}
    if config in ("warmer", "everything"):
        assert github
    # The API server is nobody's business here.
    assert spec["automountServiceAccountToken"] is False


def test_gpu_values_reach_the_runner_and_the_agent_sees_every_gpu() -> None:
    spec = spec_of("gpu", "runner-agent-runner")
    runner = container(spec, "runner")
    agent = container(spec, "runner-agent")
    assert runner is not None
    assert agent is not None
    assert runner["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert runner["image"].endswith("/runner-agent-runner-gpu:0.1.0")
    assert "nvidia.com/gpu" not in agent["resources"].get("limits", {})
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"} in agent["env"]
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    # The GPU image says all; the init containers need none.
    void = {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}
    once = [c for c in spec["initContainers"] if c.get("restartPolicy") != "Always"]
    assert [c["name"] for c in once] == ["register", "externals"]
    assert all(void in c["env"] for c in once)


def test_the_warmer_is_placed_by_its_own_values_not_the_runner_pods() -> None:
    values = {**support.CONFIGURATIONS["warmer"], "pod": support.CONFIGURATIONS["gpu"]["pod"]}
    values["warmer"] = {
        "enabled": True,
        "nodeSelector": {"pool": "general"},
        "podAnnotations": {
            "container.apparmor.security.beta.kubernetes.io/runner-agent": "unconfined"
        },
    }
    text = support.render_text(values)
    documents = yaml.safe_load_all(text["runner-agent/templates/warmer.yaml"])
    [warmer] = [d for d in documents if d["kind"] == "Deployment"]
    template = warmer["spec"]["template"]
    assert template["spec"]["nodeSelector"] == {"pool": "general"}
    assert "tolerations" not in template["spec"]
    assert template["metadata"]["annotations"] == values["warmer"]["podAnnotations"]


def test_without_the_engine_the_runner_waits_for_no_docker() -> None:
    values = {**support.STANDALONE, "engine": {"enabled": False}}
    text = support.render_text(values)
    [runners] = [
        d
        for d in yaml.safe_load_all(text["runner-agent/templates/runners.yaml"])
        if d["kind"] == "StatefulSet"
    ]
    runner = container(runners["spec"]["template"]["spec"], "runner")
    assert runner is not None
    names = {e["name"] for e in runner["env"]}
    assert not names & {"DOCKER_HOST", "RUNNER_WAIT_FOR_DOCKER_IN_SECONDS"}


def test_images_are_named_as_the_release_workflow_publishes() -> None:
    images = {
        c["image"]
        for config in support.CONFIGURATIONS
        for spec in support.render(config).pod_specs().values()
        for c in spec.get("initContainers", []) + spec["containers"]
        if "runner-agent" in c["image"]
    }
    assert images == {
        f"ghcr.io/runner-agent/{name}:0.1.0"
        for name in (
            "runner-agent",
            "runner-agent-engine",
            "runner-agent-hook",
            "runner-agent-runner",
            "runner-agent-runner-gpu",
        )
    }


def test_the_arc_example_names_what_the_chart_makes() -> None:
    rendered = support.render("defaults")
    spec = support.arc_pod()["spec"]
    assert (
        volume_of(spec, "store")["persistentVolumeClaim"]["claimName"]
        == rendered.one("PersistentVolumeClaim")["metadata"]["name"]
    )
    assert (
        volume_of(spec, "config")["configMap"]["name"]
        == rendered.one("ConfigMap", "-config")["metadata"]["name"]
    )
    assert (
        volume_of(spec, "tokens")["secret"]["secretName"]
        == rendered.one("Secret")["metadata"]["name"]
    )
    names = [c["name"] for c in spec["initContainers"]]
    # ARC's externals copy first, then the hook, then the sidecars the runner waits for.
    assert names == ["init-dind-externals", "runner-agent-hook", "runner-agent", "engine"]
    engine = container(spec, "engine")
    assert engine is not None
    assert mounts(engine)["/home/runner/externals"]["name"] == "dind-externals"
    # The chart's own agent container and the example's agree, field for field.
    chart_spec = spec_of("gpu", "runner-agent-runner")
    chart_agent = container(chart_spec, "runner-agent")
    assert chart_agent is not None
    example_agent = container(spec, "runner-agent")
    assert example_agent is not None
    for key in (
        "args",
        "ports",
        "startupProbe",
        "readinessProbe",
        "livenessProbe",
        "securityContext",
    ):
        assert example_agent[key] == chart_agent[key], key


@pytest.mark.parametrize(("config", "pod"), [p for p in PODS if p[1] == "runner-agent-runner"])
def test_standalone_runners_register_in_an_init_container(config: str, pod: str) -> None:
    [runners] = support.render(config).of("StatefulSet")
    assert runners["spec"]["serviceName"] in {
        s["metadata"]["name"] for s in support.render(config).of("Service")
    }
    spec = spec_of(config, pod)
    names = [c["name"] for c in spec["initContainers"]]
    minting = config == "everything"  # the App mints; gpu reads a registration Secret
    expected = ["register", "externals", "runner-agent", "engine"]
    assert names == (["registration-token", *expected] if minting else expected)
    registration = volume_of(spec, "registration")
    if minting:
        assert registration["emptyDir"]["medium"] == "Memory"
        token = container(spec, "registration-token")
        assert token is not None
        assert token["args"][:2] == ["github", "registration-token"]
        assert "github" in {m["name"] for m in token["volumeMounts"]}
    else:
        assert registration["secret"]["secretName"] == "runner-registration"
    register = container(spec, "register")
    runner = container(spec, "runner")
    assert register is not None
    assert runner is not None
    assert "--ephemeral" not in register["args"][0]  # a runner restarted in place re-registers
    assert "config.sh" in register["args"][0]
    assert "/run/runner-config/" in register["args"][0]
    assert mounts(register)["/run/runner-config"]["name"] == "runner-config"
    assert mounts(runner)["/run/runner-config"]["readOnly"]
    assert "exec ./run.sh" in runner["args"][0]
    assert "config.sh" not in runner["args"][0]


@pytest.mark.parametrize(("config", "pod"), [p for p in PODS if p[1] != "runner-agent-warmer"])
def test_the_engine_has_the_runners_externals_where_the_runner_has_them(
    config: str, pod: str
) -> None:
    spec = spec_of(config, pod)
    engine = container(spec, "engine")
    assert engine is not None
    volume = mounts(engine)["/home/runner/externals"]["name"]
    assert "emptyDir" in volume_of(spec, volume)
    [copier] = [
        c
        for c in spec["initContainers"]
        if volume in {m["name"] for m in c.get("volumeMounts", [])}
        and c.get("restartPolicy") != "Always"
    ]
    assert copier["command"] == ["cp"]
    assert copier["args"][:2] == ["-r", "/home/runner/externals/."]
    assert copier["args"][2] == mounts(copier)[copier["args"][2].rstrip("/")]["mountPath"] + "/"
    assert copier["image"].split("/")[-1].split(":")[0] in {
        "actions-runner",
        "runner-agent-runner",
        "runner-agent-runner-gpu",
    }


def test_pod_annotation_gives_the_agent_alone_a_token_that_may_patch_pods() -> None:
    rendered = support.render("everything")
    spec = spec_of("everything", "runner-agent-runner")
    assert spec["automountServiceAccountToken"] is False
    holders = [
        c["name"]
        for c in spec.get("initContainers", []) + spec["containers"]
        if "kube-api" in {m["name"] for m in c.get("volumeMounts", [])}
    ]
    assert holders == ["runner-agent"]
    agent = container(spec, "runner-agent")
    assert agent is not None
    assert mounts(agent)["/var/run/secrets/kubernetes.io/serviceaccount"]["readOnly"]
    env = {e["name"]: e for e in agent["env"]}
    assert env["RUNNER_AGENT_KUBERNETES__ANNOTATE_POD"]["value"] == "true"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    sources = volume_of(spec, "kube-api")["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["expirationSeconds"] <= 3600
    [role] = rendered.of("Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}]
    [binding] = rendered.of("RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": spec["serviceAccountName"], "namespace": "runners"}
    ]
    # Off by default, and never in the warmer.
    assert not support.render("gpu").of("Role")
    warmer = spec_of("everything", "runner-agent-warmer")
    assert "kube-api" not in {v["name"] for v in warmer["volumes"]}


def test_the_sandbox_s_apparmor_profile_reaches_the_agent_container_alone() -> None:
    values = {
        **support.STANDALONE,
        "agent": {"sandbox": {"enabled": True, "appArmorProfile": "Unconfined"}},
    }
    text = support.render_text(values)
    documents = yaml.safe_load_all(text["runner-agent/templates/runners.yaml"])
    [runners] = [d for d in documents if d["kind"] == "StatefulSet"]
    spec = runners["spec"]["template"]["spec"]
    agent = container(spec, "runner-agent")
    assert agent is not None
    assert agent["securityContext"]["appArmorProfile"] == {"type": "Unconfined"}
    others = [*spec["containers"], *spec["initContainers"]]
    profiled = [c["name"] for c in others if "appArmorProfile" in c.get("securityContext", {})]
    assert profiled == ["runner-agent"]
