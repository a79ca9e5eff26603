"""TLS, mutual TLS and the bearer token, over a real loopback server on port 0."""
from __future__ import annotations

import asyncio
import shutil

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloud_node.security import Security, check
from cloud_node.server import start_server
from device_node.client import GrpcTransport, get_info
from device_node.connect import ClientSecurity, open_channel
from persona_sim.cli.certs import make_certs
from persona_sim.errors import NodeError
from persona_sim.sim.cloud_engine import CloudEngine
from persona_sim.wire import pb_grpc
from persona_sim.wire.codec import channel_options
from persona_sim.wire.messages import Hello

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Two independent sets: the cloud's, and another CA's (the wrong ones)."""
    root = tmp_path_factory.mktemp("pki")
    return make_certs(root / "good", ["localhost", "127.0.0.1"]), make_certs(root / "other", ["localhost", "127.0.0.1"])


def _call(tiny_world, server_sec: Security, client_sec: ClientSecurity, body, timeout_s: float = 3.0):
    scenario, _, _, path, bundle = tiny_world
    data = path.read_bytes()
    engine = CloudEngine(scenario, bundle, len(data))

    async def main():
        server, port, _ = await start_server(engine, data, "127.0.0.1:0", server_sec)
        try:
            async with open_channel(f"127.0.0.1:{port}", channel_options(64 << 20), client_sec) as channel:
                return await asyncio.wait_for(body(channel, engine), timeout_s)
        finally:
            await server.stop(None)
    return asyncio.run(main())


async def _info(channel, engine):
    return (await get_info(pb_grpc.PersonaCloudStub(channel), "cloud")).model_signature


async def _health(channel, engine):
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def test_tls_handshake_succeeds_with_the_right_ca_and_fails_with_another(tiny_world, pki):
    good, other = pki
    server = Security(good["cloud.pem"], good["cloud.key"])
    assert _call(tiny_world, server, ClientSecurity(ca=good["ca.pem"]), _info) == tiny_world[4].signature
    with pytest.raises((NodeError, asyncio.TimeoutError)):
        _call(tiny_world, server, ClientSecurity(ca=other["ca.pem"]), _info)
    with pytest.raises((NodeError, asyncio.TimeoutError)):              # plaintext to a TLS port
        _call(tiny_world, server, ClientSecurity(), _info)


def test_mutual_tls_needs_a_client_certificate_from_the_clients_ca(tiny_world, pki):
    good, other = pki
    server = Security(good["cloud.pem"], good["cloud.key"], client_ca=good["ca.pem"])
    ok = ClientSecurity(ca=good["ca.pem"], cert=good["device.pem"], key=good["device.key"])
    assert _call(tiny_world, server, ok, _info) == tiny_world[4].signature
    for client in (ClientSecurity(ca=good["ca.pem"]),                                   # no certificate
                   ClientSecurity(ca=good["ca.pem"], cert=other["device.pem"], key=other["device.key"])):
        with pytest.raises((NodeError, asyncio.TimeoutError)):
            _call(tiny_world, server, client, _info)


def test_token_is_required_on_every_call_but_health(tiny_world, pki, tmp_path):
    good, _ = pki
    server = Security(token_file=good["token"])
    wrong = tmp_path / "wrong"
    wrong.write_text("0" * 64)
    assert _call(tiny_world, server, ClientSecurity(token_file=good["token"]), _info) == tiny_world[4].signature
    assert _call(tiny_world, server, ClientSecurity(), _health)           # health answers without a token
    for client in (ClientSecurity(), ClientSecurity(token_file=wrong)):
        with pytest.raises(NodeError, match="UNAUTHENTICATED.*bearer token"):
            _call(tiny_world, server, client, _info)

    async def adapt_stream(channel, engine):                            # the streaming RPC is guarded too
        hello = Hello("n", engine.bundle.signature, 0, 1, scenario_hash=engine.scenario_hash)
        await GrpcTransport(channel, "cloud", hello, engine.max_frame_bytes).open()
    with pytest.raises(NodeError, match="Adapt stream at cloud failed: UNAUTHENTICATED"):
        _call(tiny_world, server, ClientSecurity(), adapt_stream)
    _call(tiny_world, server, ClientSecurity(token_file=good["token"]), adapt_stream)   # and opens with it


def test_plaintext_off_loopback_needs_insecure_and_bad_settings_are_named(pki, tmp_path):
    good, _ = pki
    with pytest.raises(NodeError, match="refusing to listen on '0.0.0.0:5005' without TLS.*--insecure"):
        check("0.0.0.0:5005", Security())
    check("0.0.0.0:5005", Security(insecure=True))
    check("127.0.0.1:0", Security())
    check("[::1]:0", Security())
    check("0.0.0.0:5005", Security(good["cloud.pem"], good["cloud.key"]))
    with pytest.raises(NodeError, match="--tls-cert needs --tls-key"):
        check("127.0.0.1:0", Security(good["cloud.pem"]))
    with pytest.raises(NodeError, match="--tls-key .*missing.pem: cannot read it"):
        check("127.0.0.1:0", Security(good["cloud.pem"], tmp_path / "missing.pem"))
    short = tmp_path / "short"
    short.write_text("abc")
    with pytest.raises(NodeError, match="the token has 3 characters"):
        check("127.0.0.1:0", Security(token_file=short))
    with pytest.raises(NodeError, match="--tls-cert needs --tls-ca"):
        ClientSecurity(cert=good["device.pem"], key=good["device.key"]).check()
