from hazremote.wire.haz.remote.v1 import digest_pb2 as _digest_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Compression(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPRESSION_IDENTITY: _ClassVar[Compression]
    COMPRESSION_ZSTD: _ClassVar[Compression]
COMPRESSION_IDENTITY: Compression
COMPRESSION_ZSTD: Compression

class GetCapabilitiesRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class ServerCapabilities(_message.Message):
    __slots__ = ("server_version", "server_time_unix_ms", "hash_functions", "compressions", "max_blob_size_bytes", "max_batch_total_size_bytes", "max_batch_items", "max_message_size_bytes", "stream_chunk_size_bytes", "token_name", "token_scope", "token_namespaces", "token_read_through", "auth_disabled", "execution_offered", "execution_pools")
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    HASH_FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    COMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_BLOB_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_TOTAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_ITEMS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    STREAM_CHUNK_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOKEN_NAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_SCOPE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    TOKEN_READ_THROUGH_FIELD_NUMBER: _ClassVar[int]
    AUTH_DISABLED_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_OFFERED_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_POOLS_FIELD_NUMBER: _ClassVar[int]
    server_version: str
    server_time_unix_ms: int
    hash_functions: _containers.RepeatedScalarFieldContainer[_digest_pb2.HashFunction]
    compressions: _containers.RepeatedScalarFieldContainer[Compression]
    max_blob_size_bytes: int
    max_batch_total_size_bytes: int
    max_batch_items: int
    max_message_size_bytes: int
    stream_chunk_size_bytes: int
    token_name: str
    token_scope: str
    token_namespaces: _containers.RepeatedScalarFieldContainer[str]
    token_read_through: _containers.RepeatedScalarFieldContainer[str]
    auth_disabled: bool
    execution_offered: bool
    execution_pools: _containers.RepeatedCompositeFieldContainer[ExecutionPool]
    def __init__(self, server_version: _Optional[str] = ..., server_time_unix_ms: _Optional[int] = ..., hash_functions: _Optional[_Iterable[_Union[_digest_pb2.HashFunction, str]]] = ..., compressions: _Optional[_Iterable[_Union[Compression, str]]] = ..., max_blob_size_bytes: _Optional[int] = ..., max_batch_total_size_bytes: _Optional[int] = ..., max_batch_items: _Optional[int] = ..., max_message_size_bytes: _Optional[int] = ..., stream_chunk_size_bytes: _Optional[int] = ..., token_name: _Optional[str] = ..., token_scope: _Optional[str] = ..., token_namespaces: _Optional[_Iterable[str]] = ..., token_read_through: _Optional[_Iterable[str]] = ..., auth_disabled: _Optional[bool] = ..., execution_offered: _Optional[bool] = ..., execution_pools: _Optional[_Iterable[_Union[ExecutionPool, _Mapping]]] = ...) -> None: ...

class ExecutionPool(_message.Message):
    __slots__ = ("platform", "workers", "slots", "free_slots")
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    FREE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    platform: _containers.RepeatedCompositeFieldContainer[_digest_pb2.Property]
    workers: int
    slots: int
    free_slots: int
    def __init__(self, platform: _Optional[_Iterable[_Union[_digest_pb2.Property, _Mapping]]] = ..., workers: _Optional[int] = ..., slots: _Optional[int] = ..., free_slots: _Optional[int] = ...) -> None: ...

class FindMissingBlobsRequest(_message.Message):
    __slots__ = ("hash_function", "digests")
    HASH_FUNCTION_FIELD_NUMBER: _ClassVar[int]
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    hash_function: _digest_pb2.HashFunction
    digests: _containers.RepeatedCompositeFieldContainer[_digest_pb2.Digest]
    def __init__(self, hash_function: _Optional[_Union[_digest_pb2.HashFunction, str]] = ..., digests: _Optional[_Iterable[_Union[_digest_pb2.Digest, _Mapping]]] = ...) -> None: ...

class FindMissingBlobsResponse(_message.Message):
    __slots__ = ("missing",)
    MISSING_FIELD_NUMBER: _ClassVar[int]
    missing: _containers.RepeatedCompositeFieldContainer[_digest_pb2.Digest]
    def __init__(self, missing: _Optional[_Iterable[_Union[_digest_pb2.Digest, _Mapping]]] = ...) -> None: ...

class BatchReadBlobsRequest(_message.Message):
    __slots__ = ("hash_function", "digests", "accepted_compressions")
    HASH_FUNCTION_FIELD_NUMBER: _ClassVar[int]
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_COMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    hash_function: _digest_pb2.HashFunction
    digests: _containers.RepeatedCompositeFieldContainer[_digest_pb2.Digest]
    accepted_compressions: _containers.RepeatedScalarFieldContainer[Compression]
    def __init__(self, hash_function: _Optional[_Union[_digest_pb2.HashFunction, str]] = ..., digests: _Optional[_Iterable[_Union[_digest_pb2.Digest, _Mapping]]] = ..., accepted_compressions: _Optional[_Iterable[_Union[Compression, str]]] = ...) -> None: ...

class BatchReadBlobsResponse(_message.Message):
    __slots__ = ("items",)
    class Item(_message.Message):
        __slots__ = ("digest", "data", "compression", "status_code", "status_message")
        DIGEST_FIELD_NUMBER: _ClassVar[int]
        DATA_FIELD_NUMBER: _ClassVar[int]
        COMPRESSION_FIELD_NUMBER: _ClassVar[int]
        STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
        STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
        digest: _digest_pb2.Digest
        data: bytes
        compression: Compression
        status_code: int
        status_message: str
        def __init__(self, digest: _Optional[_Union[_digest_pb2.Digest, _Mapping]] = ..., data: _Optional[bytes] = ..., compression: _Optional[_Union[Compression, str]] = ..., status_code: _Optional[int] = ..., status_message: _Optional[str] = ...) -> None: ...
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[BatchReadBlobsResponse.Item]
    def __init__(self, items: _Optional[_Iterable[_Union[BatchReadBlobsResponse.Item, _Mapping]]] = ...) -> None: ...

class BatchUpdateBlobsRequest(_message.Message):
    __slots__ = ("hash_function", "items")
    class Item(_message.Message):
        __slots__ = ("digest", "data", "compression")
        DIGEST_FIELD_NUMBER: _ClassVar[int]
        DATA_FIELD_NUMBER: _ClassVar[int]
        COMPRESSION_FIELD_NUMBER: _ClassVar[int]
        digest: _digest_pb2.Digest
        data: bytes
        compression: Compression
        def __init__(self, digest: _Optional[_Union[_digest_pb2.Digest, _Mapping]] = ..., data: _Optional[bytes] = ..., compression: _Optional[_Union[Compression, str]] = ...) -> None: ...
    HASH_FUNCTION_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    hash_function: _digest_pb2.HashFunction
    items: _containers.RepeatedCompositeFieldContainer[BatchUpdateBlobsRequest.Item]
    def __init__(self, hash_function: _Optional[_Union[_digest_pb2.HashFunction, str]] = ..., items: _Optional[_Iterable[_Union[BatchUpdateBlobsRequest.Item, _Mapping]]] = ...) -> None: ...

class BatchUpdateBlobsResponse(_message.Message):
    __slots__ = ("items",)
    class Item(_message.Message):
        __slots__ = ("digest", "status_code", "status_message")
        DIGEST_FIELD_NUMBER: _ClassVar[int]
        STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
        STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
        digest: _digest_pb2.Digest
        status_code: int
        status_message: str
        def __init__(self, digest: _Optional[_Union[_digest_pb2.Digest, _Mapping]] = ..., status_code: _Optional[int] = ..., status_message: _Optional[str] = ...) -> None: ...
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[BatchUpdateBlobsResponse.Item]
    def __init__(self, items: _Optional[_Iterable[_Union[BatchUpdateBlobsResponse.Item, _Mapping]]] = ...) -> None: ...

class ReadBlobRequest(_message.Message):
    __slots__ = ("hash_function", "digest", "offset", "accepted_compressions")
    HASH_FUNCTION_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_COMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    hash_function: _digest_pb2.HashFunction
    digest: _digest_pb2.Digest
    offset: int
    accepted_compressions: _containers.RepeatedScalarFieldContainer[Compression]
    def __init__(self, hash_function: _Optional[_Union[_digest_pb2.HashFunction, str]] = ..., digest: _Optional[_Union[_digest_pb2.Digest, _Mapping]] = ..., offset: _Optional[int] = ..., accepted_compressions: _Optional[_Iterable[_Union[Compression, str]]] = ...) -> None: ...

class ReadBlobChunk(_message.Message):
    __slots__ = ("compression", "data")
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    compression: Compression
    data: bytes
    def __init__(self, compression: _Optional[_Union[Compression, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class WriteBlobChunk(_message.Message):
    __slots__ = ("hash_function", "digest", "compression", "data", "finish")
    HASH_FUNCTION_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FINISH_FIELD_NUMBER: _ClassVar[int]
    hash_function: _digest_pb2.HashFunction
    digest: _digest_pb2.Digest
    compression: Compression
    data: bytes
    finish: bool
    def __init__(self, hash_function: _Optional[_Union[_digest_pb2.HashFunction, str]] = ..., digest: _Optional[_Union[_digest_pb2.Digest, _Mapping]] = ..., compression: _Optional[_Union[Compression, str]] = ..., data: _Optional[bytes] = ..., finish: _Optional[bool] = ...) -> None: ...

class WriteBlobResponse(_message.Message):
    __slots__ = ("committed_size_bytes",)
    COMMITTED_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    committed_size_bytes: int
    def __init__(self, committed_size_bytes: _Optional[int] = ...) -> None: ...

class GetManifestRequest(_message.Message):
    __slots__ = ("namespace", "hash_function", "key")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    HASH_FUNCTION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    hash_function: _digest_pb2.HashFunction
    key: bytes
    def __init__(self, namespace: _Optional[str] = ..., hash_function: _Optional[_Union[_digest_pb2.HashFunction, str]] = ..., key: _Optional[bytes] = ...) -> None: ...

class GetManifestResponse(_message.Message):
    __slots__ = ("found", "manifest_json", "found_in_namespace")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    FOUND_IN_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    found: bool
    manifest_json: bytes
    found_in_namespace: str
    def __init__(self, found: _Optional[bool] = ..., manifest_json: _Optional[bytes] = ..., found_in_namespace: _Optional[str] = ...) -> None: ...

class BatchGetManifestsRequest(_message.Message):
    __slots__ = ("namespace", "hash_function", "keys")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    HASH_FUNCTION_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    hash_function: _digest_pb2.HashFunction
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, namespace: _Optional[str] = ..., hash_function: _Optional[_Union[_digest_pb2.HashFunction, str]] = ..., keys: _Optional[_Iterable[bytes]] = ...) -> None: ...

class BatchGetManifestsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[GetManifestResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[GetManifestResponse, _Mapping]]] = ...) -> None: ...

class PutManifestRequest(_message.Message):
    __slots__ = ("namespace", "hash_function", "key", "manifest_json")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    HASH_FUNCTION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    hash_function: _digest_pb2.HashFunction
    key: bytes
    manifest_json: bytes
    def __init__(self, namespace: _Optional[str] = ..., hash_function: _Optional[_Union[_digest_pb2.HashFunction, str]] = ..., key: _Optional[bytes] = ..., manifest_json: _Optional[bytes] = ...) -> None: ...

class PutManifestResponse(_message.Message):
    __slots__ = ("created",)
    CREATED_FIELD_NUMBER: _ClassVar[int]
    created: bool
    def __init__(self, created: _Optional[bool] = ...) -> None: ...
