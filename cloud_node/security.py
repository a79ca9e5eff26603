"""What the cloud node lets in: TLS (mutual, with a client CA), a bearer token, and no plaintext on a
non-loopback address unless asked for.

The token is checked on every RPC but the standard health check (so load balancers and `grpc_health_probe`
work without it), with a constant-time comparison; a missing or wrong one is ``UNAUTHENTICATED``.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from persona_sim.errors import NodeError

from .servicer import RateLimitedLog, refuse

log = logging.getLogger("cloud_node")
HEALTH_PREFIX = "/grpc.health.v1.Health/"
LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class Security:
    cert: Path | None = None          # the server's certificate chain (PEM)
    key: Path | None = None           # its private key (PEM)
    client_ca: Path | None = None     # require client certificates signed by this CA (mutual TLS)
    token_file: Path | None = None    # a bearer token every RPC but health must carry
    insecure: bool = False            # allow plaintext on a non-loopback address

    @property
    def tls(self) -> bool:
        return self.cert is not None


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise NodeError(f"{what} {path}: cannot read it ({exc.strerror})") from None


def read_token(path: Path) -> str:
    token = read_file(path, "--token-file").decode("utf-8", "replace").strip()
    if len(token) < 16:
        raise NodeError(f"--token-file {path}: the token has {len(token)} characters; use at least 16 "
                        "(e.g. `openssl rand -hex 32 > token`)")
    return token


def is_loopback(listen: str) -> bool:
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False                  # a name other than localhost: it may resolve anywhere


def server_credentials(sec: Security) -> grpc.ServerCredentials:
    pair = (read_file(sec.key, "--tls-key"), read_file(sec.cert, "--tls-cert"))
    if sec.client_ca is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials([pair], root_certificates=read_file(sec.client_ca, "--tls-client-ca"),
                                       require_client_auth=True)


def check(listen: str, sec: Security) -> None:
    """Refuse a configuration that cannot serve, or would serve plaintext off loopback without ``insecure``
    (called before anything slow, such as training, starts)."""
    if not sec.tls and (sec.client_ca is not None or sec.key is not None):
        raise NodeError("--tls-key and --tls-client-ca need --tls-cert")
    if sec.tls and sec.key is None:
        raise NodeError("--tls-cert needs --tls-key (the certificate's private key)")
    for path, what in ((sec.cert, "--tls-cert"), (sec.key, "--tls-key"), (sec.client_ca, "--tls-client-ca")):
        if path is not None:
            read_file(path, what)
    if sec.token_file is not None:
        read_token(sec.token_file)
    if not sec.tls and not is_loopback(listen) and not sec.insecure:
        raise NodeError(f"refusing to listen on {listen!r} without TLS: pass --tls-cert/--tls-key "
                        "(see `persona-sim certs`), or --insecure to serve plaintext on purpose")


def add_port(server: grpc.aio.Server, listen: str, sec: Security) -> int:
    """Bind ``listen`` with TLS when configured; refuse plaintext off loopback unless ``insecure``."""
    check(listen, sec)
    if sec.tls:
        return server.add_secure_port(listen, server_credentials(sec))
    if not is_loopback(listen):
        log.warning("serving PLAINTEXT on %s (--insecure): anyone on the network can read and send frames", listen)
    return server.add_insecure_port(listen)


def _denied(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that refuses the call."""
    async def unary(request, context):
        refuse(context, grpc.StatusCode.UNAUTHENTICATED, message)

    async def unary_stream(request, context):
        refuse(context, grpc.StatusCode.UNAUTHENTICATED, message)
        return
        yield                                        # a generator: a streaming handler

    async def stream(request_iterator, context):
        refuse(context, grpc.StatusCode.UNAUTHENTICATED, message)

    async def stream_stream(request_iterator, context):
        refuse(context, grpc.StatusCode.UNAUTHENTICATED, message)
        return
        yield

    ser = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary, **ser)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(unary_stream, **ser)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(stream, **ser)
    return grpc.stream_stream_rpc_method_handler(stream_stream, **ser)


class TokenCheck(grpc.aio.ServerInterceptor):
    """``authorization: Bearer <token>`` on every call but the health check."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()
        self._log = RateLimitedLog(log)          # a client must not fill the disk with refusals

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None or details.method.startswith(HEALTH_PREFIX):
            return handler
        got = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(got.encode() if isinstance(got, str) else got, self._expected):
            return handler
        reason = "missing" if not got else "wrong"
        self._log.warning("%s: %s bearer token refused", details.method, reason)
        return _denied(handler, f"{reason} bearer token: send `authorization: Bearer <token>` (--token-file)")
