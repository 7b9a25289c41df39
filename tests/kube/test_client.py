"""The Kubernetes API client against the stub over TLS: a merge patch lands, and each
kind of answer maps to its error class with a message that says what to fix and never
holds the token; redirects are not followed, answers are bounded. The stub itself
answers as the API server does (tested first, since every other test leans on it)."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest

from agent.kube import client, errors
from tests.kube import pki as pki_
from tests.kube.conftest import Settings
from tests.kube.stub import ApiServer, Failure
from tests.support.agentproc import free_port

ANNOTATE = {"metadata": {"annotations": {"runner-agent/job": "build"}}}


@pytest.fixture
async def kube(settings: Settings) -> AsyncIterator[client.Client]:
    made = client.Client(settings)
    yield made
    await made.close()


async def test_the_stub_refuses_what_the_api_server_refuses(api: ApiServer, pki: pki_.Pki) -> None:
    trust = ssl.create_default_context(cafile=str(pki.ca_file))
    url = f"{api.url}/api/v1/namespaces/{api.namespace}/pods/{api.pod}"
    body = json.dumps(ANNOTATE)
    auth = {"Authorization": f"Bearer {api.token}"}
    async with aiohttp.ClientSession() as session:
        async with session.patch(url, data=body, ssl=trust) as resp:
            assert resp.status == 401
            assert (await resp.json())["reason"] == "Unauthorized"
        headers = auth | {"Content-Type": "application/json"}
        async with session.patch(url, data=body, headers=headers, ssl=trust) as resp:
            assert resp.status == 415
            assert "application/merge-patch+json" in (await resp.json())["message"]
        headers = auth | {"Content-Type": client.MERGE_PATCH}
        removed = {"a": "1", "actions.github.com/patch-id": None}
        patch = json.dumps({"metadata": {"annotations": removed}})
        async with session.patch(url, data=patch, headers=headers, ssl=trust) as resp:
            assert resp.status == 200
            pod = await resp.json()
    assert pod["metadata"]["annotations"] == {"a": "1"}
    assert pod["metadata"]["resourceVersion"] == "1001"
    assert api.annotations() == {"a": "1"}


async def test_a_merge_patch_lands_and_the_updated_pod_is_answered(
    api: ApiServer, kube: client.Client
) -> None:
    pod = await kube.patch_pod(ANNOTATE)
    assert pod["kind"] == "Pod"
    assert pod["metadata"]["annotations"]["runner-agent/job"] == "build"
    assert api.annotations()["runner-agent/job"] == "build"
    await kube.patch_pod({"metadata": {"annotations": {"runner-agent/job": None}}})
    assert "runner-agent/job" not in api.annotations()


async def test_a_refused_token_says_which_setting_and_not_the_token(
    api: ApiServer, settings: Settings, kube: client.Client
) -> None:
    settings.token_file.write_text("kube-token-stale\n")
    with pytest.raises(errors.Unauthorized) as caught:
        await kube.patch_pod(ANNOTATE)
    assert "401" in str(caught.value)
    assert "kubernetes.token_file" in str(caught.value)
    assert "kube-token-stale" not in str(caught.value)
    assert not caught.value.transient


async def test_forbidden_names_the_verb_the_resource_and_the_namespace(
    api: ApiServer, kube: client.Client
) -> None:
    api.forbid = True
    with pytest.raises(errors.Forbidden) as caught:
        await kube.patch_pod(ANNOTATE)
    message = str(caught.value)
    assert "grant the pod's ServiceAccount the verb patch on pods in namespace arc-runners" in (
        message
    )
    assert "system:serviceaccount:arc-runners:" in message
    assert api.token not in message


async def test_an_unknown_pod_names_the_pod_and_pod_name(
    api: ApiServer, settings: Settings, kube: client.Client
) -> None:
    settings.change(pod_name="not-this-pod")
    with pytest.raises(errors.NotFound) as caught:
        await kube.patch_pod(ANNOTATE)
    message = str(caught.value)
    assert "no pod arc-runners/not-this-pod on https://127.0.0.1:" in message
    assert 'pods "not-this-pod" not found' in message
    assert "POD_NAME" in message


async def test_an_invalid_key_is_refused_as_invalid(api: ApiServer, kube: client.Client) -> None:
    with pytest.raises(errors.Invalid) as caught:
        await kube.patch_pod({"metadata": {"annotations": {"runner agent/job": "x"}}})
    assert "(422)" in str(caught.value)
    assert "metadata.annotations: Invalid value" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [
        (500, {}, None),
        (503, {"Retry-After": "2"}, 2.0),
        (429, {"Retry-After": "3600"}, client.RETRY_AFTER_MAX),
        (409, {}, None),
    ],
)
async def test_5xx_429_and_409_are_transient(
    api: ApiServer,
    kube: client.Client,
    status: int,
    headers: dict[str, str],
    retry_after: float | None,
) -> None:
    said = b'{"kind":"Status","message":"the server is busy","code":%d}' % status
    api.fail(Failure(status, said, headers))
    with pytest.raises(errors.Unavailable) as caught:
        await kube.patch_pod(ANNOTATE)
    assert caught.value.transient
    assert caught.value.retry_after == retry_after
    assert f"answered {status}: the server is busy" in str(caught.value)


async def test_a_redirect_is_not_followed(api: ApiServer, kube: client.Client) -> None:
    api.fail(Failure(307, headers={"Location": f"{api.url}/elsewhere"}))
    with pytest.raises(errors.BadAnswer, match="not followed"):
        await kube.patch_pod(ANNOTATE)
    assert [s.path for s in api.seen] == [f"/api/v1/namespaces/{api.namespace}/pods/{api.pod}"]


async def test_an_answer_too_large_or_not_a_pod_is_refused(
    api: ApiServer, kube: client.Client
) -> None:
    api.fail(Failure(200, b" " * (client.MAX_ANSWER_BYTES + 1)))
    with pytest.raises(errors.BadAnswer, match="more than"):
        await kube.patch_pod(ANNOTATE)
    api.fail(Failure(200, b"<html>proxy login</html>"))
    with pytest.raises(errors.BadAnswer, match="without a pod object"):
        await kube.patch_pod(ANNOTATE)


async def test_an_unreachable_server_is_transient(settings: Settings, kube: client.Client) -> None:
    settings.change(api_url=f"https://127.0.0.1:{free_port()}")
    with pytest.raises(errors.Unavailable, match="cannot reach") as caught:
        await kube.patch_pod(ANNOTATE)
    assert caught.value.transient


async def test_an_untrusted_certificate_is_permanent_and_names_the_ca_file(
    api: ApiServer, settings: Settings, pki: pki_.Pki, kube: client.Client
) -> None:
    settings.change(ca_file=pki.other_ca_file)
    with pytest.raises(errors.Untrusted) as caught:
        await kube.patch_pod(ANNOTATE)
    assert f"kubernetes.ca_file {pki.other_ca_file}" in str(caught.value)
    assert not caught.value.transient
    assert api.seen == []
