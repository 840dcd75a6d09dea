"""The haz remote cache service: content-addressed blobs and manifests over gRPC (§9 SVC).

``cache_service.app.serve`` runs a server in-process; ``haz-cache-service`` is the command.
"""

from hazremote import __version__

__all__ = ["__version__"]
