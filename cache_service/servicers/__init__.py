"""Thin gRPC servicers of the cache API (parse → domain object → reply) and the one place
errors become statuses (:mod:`._status`)."""

from cache_service.servicers.capabilities import CapabilitiesServicer, ServerInfo
from cache_service.servicers.content import ContentStoreServicer
from cache_service.servicers.manifests import ManifestStoreServicer

__all__ = [
    "CapabilitiesServicer",
    "ContentStoreServicer",
    "ManifestStoreServicer",
    "ServerInfo",
]
