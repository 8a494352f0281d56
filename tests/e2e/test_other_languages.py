"""docs/protocol.md from another language: the Node.js example behind a real sidecar."""

from __future__ import annotations

import shutil

import pytest

from conftest import REPO, SidecarFactory, Store

NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
def test_a_node_function_receives_exactly_its_secrets(make_store, sidecars: SidecarFactory):
    store: Store = make_store("node")
    store.secret("mine", {"greeting": "hello from node", "token": b"\xff\x00binary"})
    store.secret("theirs", {"greeting": "not for you"})
    store.function("a")
    store.function("b")
    store.bind("mine", "a")
    store.bind("theirs", "b")
    server = REPO / "examples" / "node-params" / "server.js"
    sidecar = sidecars.start(store, "a", extra_env={"fprocess": f"{NODE} {server}"})  # split on spaces, as fprocess is
    answer = sidecar.request("POST", "/", b"0123456789", headers=[("Shim-Secrets", "3")])
    assert answer.status == 200, answer.body
    doc = answer.json()
    assert doc["function"] == "default/default/a"
    assert doc["secrets"] == {"mine": ["greeting", "token"]}
    assert doc["greeting"] == "hello from node"
    assert doc["body_length"] == 10
    assert "shim-secrets" not in doc["headers_seen"]
