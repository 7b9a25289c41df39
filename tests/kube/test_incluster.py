"""Finding the pod's own API server, namespace and name as client-go's in-cluster
configuration does, the settings' checks, and errors that name what to set."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.config import kubernetes as kube_config
from agent.config import models
from agent.kube import errors, incluster

IN_POD = {
    "KUBERNETES_SERVICE_HOST": "10.96.0.1",
    "KUBERNETES_SERVICE_PORT": "443",
    "POD_NAME": "runner-x7k2p",
    "HOSTNAME": "some-host",
    "POD_NAMESPACE": "from-env",
}


def settings(**values: object) -> kube_config.KubernetesSettings:
    return models.Settings.model_validate({"kubernetes": values}).kubernetes


def test_in_a_pod_everything_comes_from_what_kubernetes_gives_it(tmp_path: Path) -> None:
    namespace = tmp_path / "namespace"
    namespace.write_text("arc-runners")  # the kubelet writes it without a newline
    where = incluster.place(settings(), IN_POD, namespace_file=namespace)
    assert where == incluster.Place("https://10.96.0.1:443", "arc-runners", "runner-x7k2p")
    assert where.path == "/api/v1/namespaces/arc-runners/pods/runner-x7k2p"


def test_an_ipv6_service_host_is_bracketed() -> None:
    environ = IN_POD | {"KUBERNETES_SERVICE_HOST": "fd00:10:96::1"}
    environ["KUBERNETES_SERVICE_PORT"] = "6443"
    assert incluster.api_url(settings(), environ) == "https://[fd00:10:96::1]:6443"


def test_settings_come_first(tmp_path: Path) -> None:
    chosen = settings(api_url="https://kube.example.com:6443/", namespace="ns", pod_name="pod")
    where = incluster.place(chosen, IN_POD, namespace_file=tmp_path / "absent")
    assert where == incluster.Place("https://kube.example.com:6443", "ns", "pod")


def test_without_the_namespace_file_pod_namespace_and_without_pod_name_the_hostname(
    tmp_path: Path,
) -> None:
    environ = {k: v for k, v in IN_POD.items() if k != "POD_NAME"}
    where = incluster.place(settings(), environ, namespace_file=tmp_path / "absent")
    assert (where.namespace, where.pod) == ("from-env", "some-host")


def test_outside_a_pod_the_error_names_the_variables_and_the_setting(tmp_path: Path) -> None:
    with pytest.raises(errors.NotConfigured) as caught:
        incluster.place(settings(), {"POD_NAME": "p"}, namespace_file=tmp_path / "absent")
    message = str(caught.value)
    assert "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT" in message
    assert "kubernetes.api_url" in message
    assert "kubernetes.annotate_pod: false" in message


def test_an_unknown_pod_or_namespace_names_what_to_set(tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    no_name = {k: v for k, v in IN_POD.items() if k not in ("POD_NAME", "HOSTNAME")}
    with pytest.raises(errors.NotConfigured, match=r"POD_NAME from the downward API"):
        incluster.place(settings(), no_name, namespace_file=absent)
    no_namespace = {k: v for k, v in IN_POD.items() if k != "POD_NAMESPACE"}
    with pytest.raises(errors.NotConfigured, match=r"kubernetes.namespace is unset.*POD_NAMESPACE"):
        incluster.place(settings(), no_namespace, namespace_file=absent)


def test_a_found_name_is_checked_and_its_source_named(tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    with pytest.raises(errors.NotConfigured) as caught:
        incluster.place(settings(), IN_POD | {"POD_NAME": "Runner_1"}, namespace_file=absent)
    assert "'Runner_1' is not a pod name (from POD_NAME)" in str(caught.value)
    with pytest.raises(errors.NotConfigured) as caught:
        incluster.place(settings(), IN_POD | {"POD_NAMESPACE": "x" * 64}, namespace_file=absent)
    assert "is not a namespace (from POD_NAMESPACE)" in str(caught.value)
    assert "at most 63" in str(caught.value)


def test_a_missing_token_or_ca_names_its_setting(tmp_path: Path) -> None:
    namespace = tmp_path / "namespace"
    namespace.write_text("ns")
    token = tmp_path / "token"
    missing = settings(token_file=str(token), ca_file=str(tmp_path / "ca.crt"))
    with pytest.raises(errors.NotConfigured, match=r"kubernetes.token_file .*token"):
        incluster.resolve(missing, IN_POD, namespace_file=namespace)
    token.write_text("secret-token\n")
    with pytest.raises(errors.NotConfigured) as caught:
        incluster.resolve(missing, IN_POD, namespace_file=namespace)
    assert "kubernetes.ca_file" in str(caught.value)
    assert "secret-token" not in str(caught.value)


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"namespace": "Arc_Runners"}, "is not a namespace: expected a DNS-1123 label"),
        ({"pod_name": "a" * 254}, "is not a pod name: expected a DNS-1123 subdomain"),
        ({"annotation_prefix": "runner-agent"}, "expected a DNS subdomain and a slash"),
        ({"annotation_prefix": "Runner/"}, "is not an annotation key prefix's domain"),
        ({"api_url": "http://10.96.0.1:443"}, "would cross the network in the clear"),
        ({"api_url": "https://"}, "is not an API server URL"),
        ({"request_timeout_seconds": 0.5}, "greater than or equal to 1"),
    ],
)
def test_bad_settings_are_refused_naming_the_value_and_the_form(
    values: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        settings(**values)
    assert fragment in str(caught.value)


def test_http_is_allowed_on_loopback_only() -> None:
    assert settings(api_url="http://127.0.0.1:8001").api_url == "http://127.0.0.1:8001"
    assert settings(api_url="http://[::1]:8001").api_url == "http://[::1]:8001"
