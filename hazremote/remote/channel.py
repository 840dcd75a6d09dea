"""gRPC channels to the remote cache: plaintext for ``grpc://``, TLS for ``grpcs://`` (SEC-005).

The one place that turns a :class:`~hazremote.remote.settings.RemoteConfig` into a channel, for
the run's asyncio client and for ``haz doctor``'s blocking checks alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

from hazremote.remote.settings import RemoteConfig

__all__ = ["aio_channel", "sync_channel"]

Options = Sequence[tuple[str, Any]]


def _credentials(config: RemoteConfig) -> grpc.ChannelCredentials | None:
    if config.tls is None:
        return None
    root, key, chain = config.tls.credentials_bytes()
    return grpc.ssl_channel_credentials(
        root_certificates=root, private_key=key, certificate_chain=chain
    )


def aio_channel(config: RemoteConfig, *, options: Options = ()) -> grpc.aio.Channel:
    credentials = _credentials(config)
    if credentials is None:
        return grpc.aio.insecure_channel(config.target, options=list(options))
    return grpc.aio.secure_channel(config.target, credentials, options=list(options))


def sync_channel(config: RemoteConfig, *, options: Options = ()) -> grpc.Channel:
    credentials = _credentials(config)
    if credentials is None:
        return grpc.insecure_channel(config.target, options=list(options))
    return grpc.secure_channel(config.target, credentials, options=list(options))
