from hazremote.wire.haz.remote.v1 import digest_pb2 as _digest_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LogStream(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_STREAM_STDOUT: _ClassVar[LogStream]
    LOG_STREAM_STDERR: _ClassVar[LogStream]

class FailureReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_REASON_UNSPECIFIED: _ClassVar[FailureReason]
    FAILURE_REASON_NO_WORKER_FOR_PLATFORM: _ClassVar[FailureReason]
    FAILURE_REASON_RETRIES_EXHAUSTED: _ClassVar[FailureReason]
    FAILURE_REASON_REJECTED: _ClassVar[FailureReason]
    FAILURE_REASON_WORKER_ERROR: _ClassVar[FailureReason]

class ReleaseReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RELEASE_REASON_UNSPECIFIED: _ClassVar[ReleaseReason]
    RELEASE_REASON_DRAINING: _ClassVar[ReleaseReason]
    RELEASE_REASON_REJECTED: _ClassVar[ReleaseReason]
    RELEASE_REASON_CANCELLED: _ClassVar[ReleaseReason]
LOG_STREAM_STDOUT: LogStream
LOG_STREAM_STDERR: LogStream
FAILURE_REASON_UNSPECIFIED: FailureReason
FAILURE_REASON_NO_WORKER_FOR_PLATFORM: FailureReason
FAILURE_REASON_RETRIES_EXHAUSTED: FailureReason
FAILURE_REASON_REJECTED: FailureReason
FAILURE_REASON_WORKER_ERROR: FailureReason
RELEASE_REASON_UNSPECIFIED: ReleaseReason
RELEASE_REASON_DRAINING: ReleaseReason
RELEASE_REASON_REJECTED: ReleaseReason
RELEASE_REASON_CANCELLED: ReleaseReason

class ActionInput(_message.Message):
    __slots__ = ("path", "digest", "mode")
    PATH_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    path: str
    digest: _digest_pb2.Digest
    mode: int
    def __init__(self, path: _Optional[str] = ..., digest: _Optional[_Union[_digest_pb2.Digest, _Mapping]] = ..., mode: _Optional[int] = ...) -> None: ...

class PredecessorOutputs(_message.Message):
    __slots__ = ("task", "files")
    TASK_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    task: str
    files: _containers.RepeatedCompositeFieldContainer[ActionInput]
    def __init__(self, task: _Optional[str] = ..., files: _Optional[_Iterable[_Union[ActionInput, _Mapping]]] = ...) -> None: ...

class Argv(_message.Message):
    __slots__ = ("argv",)
    ARGV_FIELD_NUMBER: _ClassVar[int]
    argv: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, argv: _Optional[_Iterable[str]] = ...) -> None: ...

class ShellScript(_message.Message):
    __slots__ = ("shell", "script")
    SHELL_FIELD_NUMBER: _ClassVar[int]
    SCRIPT_FIELD_NUMBER: _ClassVar[int]
    shell: str
    script: str
    def __init__(self, shell: _Optional[str] = ..., script: _Optional[str] = ...) -> None: ...

class Action(_message.Message):
    __slots__ = ("task", "namespace", "hash_function", "key", "key_components_json", "argv", "shell", "env", "cwd", "inputs", "predecessor_outputs", "output_patterns", "platform", "timeout_ms", "grace_period_ms", "priority_ms", "directories")
    TASK_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    HASH_FUNCTION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_COMPONENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    SHELL_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    PREDECESSOR_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PATTERNS_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_MS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_MS_FIELD_NUMBER: _ClassVar[int]
    DIRECTORIES_FIELD_NUMBER: _ClassVar[int]
    task: str
    namespace: str
    hash_function: _digest_pb2.HashFunction
    key: bytes
    key_components_json: bytes
    argv: Argv
    shell: ShellScript
    env: _containers.RepeatedCompositeFieldContainer[_digest_pb2.Property]
    cwd: str
    inputs: _containers.RepeatedCompositeFieldContainer[ActionInput]
    predecessor_outputs: _containers.RepeatedCompositeFieldContainer[PredecessorOutputs]
    output_patterns: _containers.RepeatedScalarFieldContainer[str]
    platform: _containers.RepeatedCompositeFieldContainer[_digest_pb2.Property]
    timeout_ms: int
    grace_period_ms: int
    priority_ms: int
    directories: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, task: _Optional[str] = ..., namespace: _Optional[str] = ..., hash_function: _Optional[_Union[_digest_pb2.HashFunction, str]] = ..., key: _Optional[bytes] = ..., key_components_json: _Optional[bytes] = ..., argv: _Optional[_Union[Argv, _Mapping]] = ..., shell: _Optional[_Union[ShellScript, _Mapping]] = ..., env: _Optional[_Iterable[_Union[_digest_pb2.Property, _Mapping]]] = ..., cwd: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[ActionInput, _Mapping]]] = ..., predecessor_outputs: _Optional[_Iterable[_Union[PredecessorOutputs, _Mapping]]] = ..., output_patterns: _Optional[_Iterable[str]] = ..., platform: _Optional[_Iterable[_Union[_digest_pb2.Property, _Mapping]]] = ..., timeout_ms: _Optional[int] = ..., grace_period_ms: _Optional[int] = ..., priority_ms: _Optional[int] = ..., directories: _Optional[_Iterable[str]] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("action", "wait_for_worker")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    WAIT_FOR_WORKER_FIELD_NUMBER: _ClassVar[int]
    action: Action
    wait_for_worker: bool
    def __init__(self, action: _Optional[_Union[Action, _Mapping]] = ..., wait_for_worker: _Optional[bool] = ...) -> None: ...

class WaitExecutionRequest(_message.Message):
    __slots__ = ("execution_id",)
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    def __init__(self, execution_id: _Optional[str] = ...) -> None: ...

class CancelExecutionRequest(_message.Message):
    __slots__ = ("execution_id",)
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    def __init__(self, execution_id: _Optional[str] = ...) -> None: ...

class CancelExecutionResponse(_message.Message):
    __slots__ = ("execution_cancelled",)
    EXECUTION_CANCELLED_FIELD_NUMBER: _ClassVar[int]
    execution_cancelled: bool
    def __init__(self, execution_cancelled: _Optional[bool] = ...) -> None: ...

class ExecutionUpdate(_message.Message):
    __slots__ = ("queued", "leased", "log", "completed", "failed", "cancelled")
    class Queued(_message.Message):
        __slots__ = ("execution_id", "position")
        EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
        POSITION_FIELD_NUMBER: _ClassVar[int]
        execution_id: str
        position: int
        def __init__(self, execution_id: _Optional[str] = ..., position: _Optional[int] = ...) -> None: ...
    class Leased(_message.Message):
        __slots__ = ("worker_id", "attempt")
        WORKER_ID_FIELD_NUMBER: _ClassVar[int]
        ATTEMPT_FIELD_NUMBER: _ClassVar[int]
        worker_id: str
        attempt: int
        def __init__(self, worker_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...
    class LogChunk(_message.Message):
        __slots__ = ("stream", "data", "offset")
        STREAM_FIELD_NUMBER: _ClassVar[int]
        DATA_FIELD_NUMBER: _ClassVar[int]
        OFFSET_FIELD_NUMBER: _ClassVar[int]
        stream: LogStream
        data: bytes
        offset: int
        def __init__(self, stream: _Optional[_Union[LogStream, str]] = ..., data: _Optional[bytes] = ..., offset: _Optional[int] = ...) -> None: ...
    class Completed(_message.Message):
        __slots__ = ("exit_code", "manifest_json", "duration_ms", "timed_out")
        EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
        MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
        DURATION_MS_FIELD_NUMBER: _ClassVar[int]
        TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
        exit_code: int
        manifest_json: bytes
        duration_ms: int
        timed_out: bool
        def __init__(self, exit_code: _Optional[int] = ..., manifest_json: _Optional[bytes] = ..., duration_ms: _Optional[int] = ..., timed_out: _Optional[bool] = ...) -> None: ...
    class Failed(_message.Message):
        __slots__ = ("reason", "message")
        REASON_FIELD_NUMBER: _ClassVar[int]
        MESSAGE_FIELD_NUMBER: _ClassVar[int]
        reason: FailureReason
        message: str
        def __init__(self, reason: _Optional[_Union[FailureReason, str]] = ..., message: _Optional[str] = ...) -> None: ...
    class Cancelled(_message.Message):
        __slots__ = ("execution_cancelled",)
        EXECUTION_CANCELLED_FIELD_NUMBER: _ClassVar[int]
        execution_cancelled: bool
        def __init__(self, execution_cancelled: _Optional[bool] = ...) -> None: ...
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    LEASED_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    queued: ExecutionUpdate.Queued
    leased: ExecutionUpdate.Leased
    log: ExecutionUpdate.LogChunk
    completed: ExecutionUpdate.Completed
    failed: ExecutionUpdate.Failed
    cancelled: ExecutionUpdate.Cancelled
    def __init__(self, queued: _Optional[_Union[ExecutionUpdate.Queued, _Mapping]] = ..., leased: _Optional[_Union[ExecutionUpdate.Leased, _Mapping]] = ..., log: _Optional[_Union[ExecutionUpdate.LogChunk, _Mapping]] = ..., completed: _Optional[_Union[ExecutionUpdate.Completed, _Mapping]] = ..., failed: _Optional[_Union[ExecutionUpdate.Failed, _Mapping]] = ..., cancelled: _Optional[_Union[ExecutionUpdate.Cancelled, _Mapping]] = ...) -> None: ...

class WorkerMessage(_message.Message):
    __slots__ = ("hello", "heartbeat", "log", "result", "released")
    class Hello(_message.Message):
        __slots__ = ("worker_id", "slots", "platform", "held_lease_ids")
        WORKER_ID_FIELD_NUMBER: _ClassVar[int]
        SLOTS_FIELD_NUMBER: _ClassVar[int]
        PLATFORM_FIELD_NUMBER: _ClassVar[int]
        HELD_LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
        worker_id: str
        slots: int
        platform: _containers.RepeatedCompositeFieldContainer[_digest_pb2.Property]
        held_lease_ids: _containers.RepeatedScalarFieldContainer[str]
        def __init__(self, worker_id: _Optional[str] = ..., slots: _Optional[int] = ..., platform: _Optional[_Iterable[_Union[_digest_pb2.Property, _Mapping]]] = ..., held_lease_ids: _Optional[_Iterable[str]] = ...) -> None: ...
    class Heartbeat(_message.Message):
        __slots__ = ("lease_ids",)
        LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
        lease_ids: _containers.RepeatedScalarFieldContainer[str]
        def __init__(self, lease_ids: _Optional[_Iterable[str]] = ...) -> None: ...
    class LogChunk(_message.Message):
        __slots__ = ("lease_id", "stream", "data", "offset")
        LEASE_ID_FIELD_NUMBER: _ClassVar[int]
        STREAM_FIELD_NUMBER: _ClassVar[int]
        DATA_FIELD_NUMBER: _ClassVar[int]
        OFFSET_FIELD_NUMBER: _ClassVar[int]
        lease_id: str
        stream: LogStream
        data: bytes
        offset: int
        def __init__(self, lease_id: _Optional[str] = ..., stream: _Optional[_Union[LogStream, str]] = ..., data: _Optional[bytes] = ..., offset: _Optional[int] = ...) -> None: ...
    class Result(_message.Message):
        __slots__ = ("lease_id", "exit_code", "manifest_published", "manifest_json", "duration_ms", "timed_out", "failure_message")
        LEASE_ID_FIELD_NUMBER: _ClassVar[int]
        EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
        MANIFEST_PUBLISHED_FIELD_NUMBER: _ClassVar[int]
        MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
        DURATION_MS_FIELD_NUMBER: _ClassVar[int]
        TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
        FAILURE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
        lease_id: str
        exit_code: int
        manifest_published: bool
        manifest_json: bytes
        duration_ms: int
        timed_out: bool
        failure_message: str
        def __init__(self, lease_id: _Optional[str] = ..., exit_code: _Optional[int] = ..., manifest_published: _Optional[bool] = ..., manifest_json: _Optional[bytes] = ..., duration_ms: _Optional[int] = ..., timed_out: _Optional[bool] = ..., failure_message: _Optional[str] = ...) -> None: ...
    class LeaseReleased(_message.Message):
        __slots__ = ("lease_id", "reason", "message")
        LEASE_ID_FIELD_NUMBER: _ClassVar[int]
        REASON_FIELD_NUMBER: _ClassVar[int]
        MESSAGE_FIELD_NUMBER: _ClassVar[int]
        lease_id: str
        reason: ReleaseReason
        message: str
        def __init__(self, lease_id: _Optional[str] = ..., reason: _Optional[_Union[ReleaseReason, str]] = ..., message: _Optional[str] = ...) -> None: ...
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    hello: WorkerMessage.Hello
    heartbeat: WorkerMessage.Heartbeat
    log: WorkerMessage.LogChunk
    result: WorkerMessage.Result
    released: WorkerMessage.LeaseReleased
    def __init__(self, hello: _Optional[_Union[WorkerMessage.Hello, _Mapping]] = ..., heartbeat: _Optional[_Union[WorkerMessage.Heartbeat, _Mapping]] = ..., log: _Optional[_Union[WorkerMessage.LogChunk, _Mapping]] = ..., result: _Optional[_Union[WorkerMessage.Result, _Mapping]] = ..., released: _Optional[_Union[WorkerMessage.LeaseReleased, _Mapping]] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("welcome", "lease", "cancel")
    class Welcome(_message.Message):
        __slots__ = ("heartbeat_interval_ms",)
        HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
        heartbeat_interval_ms: int
        def __init__(self, heartbeat_interval_ms: _Optional[int] = ...) -> None: ...
    class Lease(_message.Message):
        __slots__ = ("lease_id", "execution_id", "action", "lease_duration_ms")
        LEASE_ID_FIELD_NUMBER: _ClassVar[int]
        EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
        ACTION_FIELD_NUMBER: _ClassVar[int]
        LEASE_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
        lease_id: str
        execution_id: str
        action: Action
        lease_duration_ms: int
        def __init__(self, lease_id: _Optional[str] = ..., execution_id: _Optional[str] = ..., action: _Optional[_Union[Action, _Mapping]] = ..., lease_duration_ms: _Optional[int] = ...) -> None: ...
    class Cancel(_message.Message):
        __slots__ = ("lease_id",)
        LEASE_ID_FIELD_NUMBER: _ClassVar[int]
        lease_id: str
        def __init__(self, lease_id: _Optional[str] = ...) -> None: ...
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    welcome: ServerMessage.Welcome
    lease: ServerMessage.Lease
    cancel: ServerMessage.Cancel
    def __init__(self, welcome: _Optional[_Union[ServerMessage.Welcome, _Mapping]] = ..., lease: _Optional[_Union[ServerMessage.Lease, _Mapping]] = ..., cancel: _Optional[_Union[ServerMessage.Cancel, _Mapping]] = ...) -> None: ...
