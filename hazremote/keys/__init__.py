"""Cache-key derivation: input resolution, stat cache, hashing, framing (re-exported here).

Spec coverage:
* CACHE-001..009 — see each module.
"""

from hazremote.keys.components import (
    EnvEntry,
    EnvSource,
    InputFile,
    KeyComponents,
    PredecessorStreams,
)
from hazremote.keys.deriver import DerivedKey, KeyDeriver
from hazremote.keys.framing import CHAPTER_REVISION, frame_bytes, frame_key, outputs_digest
from hazremote.keys.fs import (
    DirListing,
    FileStat,
    Filesystem,
    OsFilesystem,
    ReadableFile,
    StatValues,
)
from hazremote.keys.hashing import FileHasher
from hazremote.keys.resolve import (
    InputError,
    InputResolver,
    UnmatchedInput,
    UnmatchedReason,
    build_components,
    effective_process_env,
    resolve_env,
    unmatched_warnings,
)
from hazremote.keys.statcache import StatCache, statcache_path
from hazremote.keys.worktree import GitWorkTree, WorkTree

__all__ = [
    "CHAPTER_REVISION",
    "DerivedKey",
    "DirListing",
    "EnvEntry",
    "EnvSource",
    "FileHasher",
    "FileStat",
    "Filesystem",
    "GitWorkTree",
    "InputError",
    "InputFile",
    "InputResolver",
    "KeyComponents",
    "KeyDeriver",
    "OsFilesystem",
    "PredecessorStreams",
    "ReadableFile",
    "StatCache",
    "StatValues",
    "UnmatchedInput",
    "UnmatchedReason",
    "WorkTree",
    "build_components",
    "effective_process_env",
    "frame_bytes",
    "frame_key",
    "outputs_digest",
    "resolve_env",
    "statcache_path",
    "unmatched_warnings",
]
