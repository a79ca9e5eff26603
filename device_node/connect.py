"""The device node's channel to the cloud: plaintext or TLS (with a client certificate for mutual TLS), and a
bearer token on every call."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from cloud_node.security import read_file, read_token
from persona_sim.errors import NodeError


@dataclass(frozen=True)
class ClientSecurity:
    ca: Path | None = None            # trust the cloud's certificate if signed by this CA: TLS on
    cert: Path | None = None          # this node's certificate (mutual TLS)
    key: Path | None = None
    server_name: str | None = None    # the name the cloud's certificate must carry, if not the target's host
    token_file: Path | None = None

    def check(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise NodeError("--tls-cert and --tls-key go together (this node's certificate and its key)")
        if self.cert is not None and self.ca is None:
            raise NodeError("--tls-cert needs --tls-ca (the CA that signed the cloud's certificate)")


class _Token:
    def __init__(self, token: str):
        self.entry = ("authorization", f"Bearer {token}")

    def _with_token(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(tuple(details.metadata) if details.metadata else ()), self.entry)
        return details._replace(metadata=metadata)


# One class per call shape: a grpc.aio channel files each interceptor under the first shape it matches.
class _UnaryUnary(_Token, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(self._with_token(client_call_details), request)


class _UnaryStream(_Token, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(self._with_token(client_call_details), request)


class _StreamStream(_Token, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await continuation(self._with_token(client_call_details), request_iterator)


def bearer_token(token: str) -> list:
    """Interceptors adding ``authorization: Bearer <token>`` to every call."""
    return [_UnaryUnary(token), _UnaryStream(token), _StreamStream(token)]


def open_channel(target: str, options: list, sec: ClientSecurity = ClientSecurity()) -> grpc.aio.Channel:
    sec.check()
    interceptors = bearer_token(read_token(sec.token_file)) if sec.token_file else None
    if sec.ca is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    creds = grpc.ssl_channel_credentials(
        read_file(sec.ca, "--tls-ca"),
        read_file(sec.key, "--tls-key") if sec.key else None,
        read_file(sec.cert, "--tls-cert") if sec.cert else None)
    if sec.server_name:
        options = [*options, ("grpc.ssl_target_name_override", sec.server_name)]
    return grpc.aio.secure_channel(target, creds, options=options, interceptors=interceptors)
