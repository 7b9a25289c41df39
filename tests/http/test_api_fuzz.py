"""Random bodies against the real API: always the JSON error shape, never a 500."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.agentproc import Starter

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner, max_size=5)
    ),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=400),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(
        st.sampled_from(["reason", "Reason", "force", ""]), json_values, max_size=3
    ).map(lambda v: json.dumps(v).encode()),
)
content_types = st.sampled_from(
    ["application/json", "text/plain", "application/json; charset=utf-8", None]
)


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("agent", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(self.path))


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=bodies, content_type=content_types)
def test_random_bodies_get_a_json_answer(
    start_agent: Starter, body: bytes, content_type: str | None
) -> None:
    if not start_agent.agents:
        start_agent.start(start_agent.base_config(max_request_bytes=256))
    agent = start_agent.agents[0]
    conn = UnixConnection(agent.socket)
    headers = {"Content-Type": content_type} if content_type else {}
    conn.request("POST", "/v1/reload", body=body, headers=headers)
    resp = conn.getresponse()
    data = json.loads(resp.read())
    conn.close()
    assert resp.status in {200, 400, 413, 415}, data
    if resp.status != 200:
        assert set(data) == {"error"}
        assert set(data["error"]) == {"code", "message", "details"}
        assert data["error"]["message"]
    assert agent.proc.poll() is None
