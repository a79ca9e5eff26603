"""Start, serve and stop the cloud node's gRPC server."""
from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from persona_sim.data.sequences import Dataset
from persona_sim.errors import NodeError
from persona_sim.sim.cloud_engine import CloudEngine
from persona_sim.sim.lockstep import Lockstep
from persona_sim.wire.codec import channel_options

from .security import Security, TokenCheck, add_port, read_token
from .servicer import SERVICE_NAME, PersonaCloudServicer, rpc_handler

log = logging.getLogger("cloud_node")
# Ping a silent peer every 30 s and drop it after 10 s without an answer; close connections idle for 10 min.
KEEPALIVE = [("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000),
             ("grpc.keepalive_permit_without_calls", 1), ("grpc.max_connection_idle_ms", 600_000)]


async def start_server(engine: CloudEngine, model_bytes: bytes, listen: str, security: Security = Security(),
                       dataset: Callable[[], Dataset] | None = None) -> tuple[grpc.aio.Server, int, object]:
    """Start serving on ``listen`` (HOST:PORT, port 0 picks a free one); return (server, port, health)."""
    token = read_token(security.token_file) if security.token_file else None
    server = grpc.aio.server(options=channel_options(engine.max_frame_bytes) + KEEPALIVE,
                             interceptors=[TokenCheck(token)] if token else None)
    server.add_generic_rpc_handlers((rpc_handler(PersonaCloudServicer(Lockstep(engine, values_thread=True), model_bytes, dataset)),))
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    try:
        port = add_port(server, listen, security)
    except RuntimeError as exc:
        raise NodeError(f"cannot listen on {listen!r}: {exc}") from None
    if port == 0:
        raise NodeError(f"cannot listen on {listen!r} (address in use or not local)")
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    return server, port, health


async def serve(engine: CloudEngine, model_bytes: bytes, listen: str, port_file: Path | None = None,
                announce=print, security: Security = Security(),
                dataset: Callable[[], Dataset] | None = None) -> None:
    """Serve until SIGINT/SIGTERM, then drain for a moment and stop."""
    server, port, health = await start_server(engine, model_bytes, listen, security, dataset)
    host = listen.rsplit(":", 1)[0]
    mode = ("mutual TLS" if security.client_ca else "TLS") if security.tls else "plaintext"
    auth = ", bearer token required" if security.token_file else ""
    announce(f"persona-sim cloud: serving {engine.scenario.name!r} model {engine.bundle.signature} on {host}:{port} "
             f"({mode}{auth})")
    if port_file is not None:
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.replace(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await health.enter_graceful_shutdown()
    await server.stop(grace=2.0)
    announce("persona-sim cloud: stopped")
