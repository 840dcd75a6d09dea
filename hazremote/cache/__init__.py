"""The cache: manifests, the local tier, the tiers' port, and the ``haz why`` task index.

Spec coverage:
* CACHE-010..023 — :class:`LocalCache` and :class:`Manifest` (CACHE-011).
* SEC-001 — restore never writes outside the workspace or its declared outputs.
* RC-001 — :mod:`.tiers`: local → remote behind one port (``CacheTiers``).
Out of scope: key derivation (``hazremote.keys``), the remote tier (``hazremote.remote``) and
the decision to look up or store (``hazremote.execute``, CACHE-018).
"""

from hazremote.cache.index import TaskIndex, TaskKeyRecord
from hazremote.cache.local import (
    CACHE_DIR_ENV,
    DEFAULT_COMPRESSION_LEVEL,
    CacheInfo,
    CleanReason,
    CleanReport,
    FsyncPolicy,
    LocalCache,
    RemovedItem,
    resolve_cache_root,
)
from hazremote.cache.manifest import (
    Compression,
    Manifest,
    ManifestError,
    ManifestSchemaError,
    OutputRecord,
    RecordedEnv,
    RecordedInput,
    RecordedKeyComponents,
    RecordedPredecessor,
    StreamRecord,
    parse_manifest,
    workspace_path_problem,
)
from hazremote.cache.tier import (
    ByteSink,
    KnownDigests,
    LookupResult,
    LookupStatus,
    OutputFile,
    RestoreResult,
    RestoreStatus,
    StoreResult,
    StoreStatus,
)

__all__ = [
    "CACHE_DIR_ENV",
    "DEFAULT_COMPRESSION_LEVEL",
    "ByteSink",
    "CacheInfo",
    "CleanReason",
    "CleanReport",
    "Compression",
    "FsyncPolicy",
    "KnownDigests",
    "LocalCache",
    "LookupResult",
    "LookupStatus",
    "Manifest",
    "ManifestError",
    "ManifestSchemaError",
    "OutputFile",
    "OutputRecord",
    "RecordedEnv",
    "RecordedInput",
    "RecordedKeyComponents",
    "RecordedPredecessor",
    "RemovedItem",
    "RestoreResult",
    "RestoreStatus",
    "StoreResult",
    "StoreStatus",
    "StreamRecord",
    "TaskIndex",
    "TaskKeyRecord",
    "parse_manifest",
    "resolve_cache_root",
    "workspace_path_problem",
]
