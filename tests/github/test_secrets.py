"""GitHub's secrets stay secret through a real agent: the App's private key, the JWT and
installation token minted from it, the webhook secret. /v1/config shows where each file
is, never what it holds, and neither the debug log nor an error repeats them."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from pathlib import Path

from tests.github.stub import SHA, Failure, Stub, job
from tests.github.test_job_team import complete, start
from tests.http.test_ensure_api import ARCHIVE, BODY, _config, post_ndjson
from tests.http.test_http_surface import api_get
from tests.support.agentproc import Agent, Starter, free_port
from tests.support.server import Reply, Server

SECRET = b"webhook-secret-not-for-logs"
CONTENTS = "/repos/octo/repo/contents/.github/runner-config.yml"


def _agent(start_agent: Starter, http_server: Server, stub: Stub, tmp_path: Path) -> Agent:
    (tmp_path / "app.pem").write_bytes(stub.key_pem())
    (tmp_path / "hook.secret").write_bytes(SECRET + b"\n")
    config = _config(start_agent, http_server, webhook_address=f"127.0.0.1:{free_port()}")
    config["github"] = {
        "api_url": stub.url,
        "app_id": int(stub.app_id),
        "installation_id": 99,
        "private_key_file": str(tmp_path / "app.pem"),
        "webhook_secret_file": str(tmp_path / "hook.secret"),
        "max_attempts": 1,
    }
    http_server.route(ARCHIVE, Reply(body=BODY))
    running = start_agent.start(config)
    running.wait_for(lambda: running.get("/readyz")[0] == 200, what="ready")
    running.extra["webhooks"] = "http://" + config["server"]["webhook_address"]
    return running


def _secrets(stub: Stub) -> list[str]:
    pem = stub.key_pem().decode()
    body = "".join(pem.splitlines()[1:-1])
    return [SECRET.decode(), stub.token, body[:40], body[-40:]]


async def test_no_github_secret_reaches_config_logs_or_errors(
    start_agent: Starter, http_server: Server, stub: Stub, tmp_path: Path
) -> None:
    agent = _agent(start_agent, http_server, stub, tmp_path)
    stub.jobs[("octo/repo", "17", "1")] = [job("runner-1", 1, ["self-hosted", "feature:tool"])]
    stub.files[("octo/repo", SHA, ".github/runner-config.yml")] = "features: [tool]\n"
    # A job whose start mints a JWT and an installation token and uses the token twice.
    status, events = await post_ndjson(agent, "/v1/jobs", start())
    assert status == 200, events
    assert stub.jwts, "the App's token exchange did not happen"
    await complete(agent, events[0])
    # A job that GitHub refuses: the error names the permission, not the token.
    stub.fail(CONTENTS, Failure(401, body=b'{"message": "Bad credentials"}'))
    status, [error] = await post_ndjson(agent, "/v1/jobs", start(run_id="18", sha="b" * 40))
    assert status == 502, error
    # A webhook delivery signed with the secret (the listener reads it).
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback
        agent.extra["webhooks"] + "/v1/webhooks/github",
        data=body,
        headers={
            "X-GitHub-Event": "ping",
            "X-GitHub-Delivery": "d-secret",
            "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest(),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
            assert answer.status == 200
    except urllib.error.HTTPError as exc:  # pragma: no cover - shows the body on failure
        raise AssertionError(exc.read()) from exc

    status, config = await api_get(agent.socket, "/v1/config")
    assert status == 200, config
    github = config["settings"]["github"]
    assert github["private_key_file"] == str(tmp_path / "app.pem")
    assert github["webhook_secret_file"] == str(tmp_path / "hook.secret")
    shown, logs, message = json.dumps(config), agent.logs(), json.dumps(error)
    assert config["settings"]["logging"]["level"] == "debug"  # at its most talkative
    for secret in _secrets(stub):
        assert secret not in shown, secret
        assert secret not in logs, secret
        assert secret not in message, secret
    assert "Bearer" not in logs
