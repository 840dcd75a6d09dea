"""SEC-002 for remote execution: ``execute: true`` and namespace access for Execute, Wait and
Cancel; only ``role: worker`` tokens may Connect; neither kind may act as the other."""

from __future__ import annotations

import dataclasses

import grpc
import pytest

from hazremote.wire.haz.remote.v1 import execution_pb2, execution_pb2_grpc
from tests.cache_service.auth.authkit import bearer, stored_manifest, upload_as
from tests.cache_service.server.executionkit import FakeWorker, build_action, execute
from tests.cache_service.server.serverkit import ServerThread, put_request


def execute_status(
    server: ServerThread, token: str | None, *, namespace: str = "main"
) -> tuple[grpc.StatusCode, str]:
    built = build_action(pool="auth", namespace=namespace)
    upload_as(server, "ci-main", built.blobs)
    metadata = () if token is None else bearer(token)
    try:
        execute(server.channel, built, wait_for_worker=False, metadata=metadata).next()
    except grpc.RpcError as exc:
        return exc.code(), str(exc.details())
    return grpc.StatusCode.OK, ""


def test_an_execute_token_may_submit_in_its_namespace(guarded: ServerThread) -> None:
    assert execute_status(guarded, "ci-main") == (grpc.StatusCode.OK, "")


def test_a_token_without_execute_is_refused(guarded: ServerThread) -> None:
    assert execute_status(guarded, "ci-pr", namespace="pr-1") == (
        grpc.StatusCode.PERMISSION_DENIED,
        "token 'ci-pr' may not submit remote executions (no execute)",
    )


def test_an_execute_token_outside_its_namespaces_is_refused(guarded: ServerThread) -> None:
    code, message = execute_status(guarded, "ci-main", namespace="pr-1")
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert message.startswith("token 'ci-main' may not write namespace 'pr-1'")


def test_no_token_is_unauthenticated(guarded: ServerThread) -> None:
    assert execute_status(guarded, None)[0] is grpc.StatusCode.UNAUTHENTICATED


def test_a_worker_token_cannot_execute_wait_or_cancel(guarded: ServerThread) -> None:
    assert execute_status(guarded, "worker-a") == (
        grpc.StatusCode.PERMISSION_DENIED,
        "token 'worker-a' is a worker token; it may not act as a client",
    )
    stub = execution_pb2_grpc.ExecutionStub(guarded.channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.CancelExecution(
            execution_pb2.CancelExecutionRequest(execution_id="x"),
            metadata=bearer("worker-a"),
            timeout=20,
        )
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "is a worker token" in str(info.value.details())


def test_a_client_token_cannot_connect_as_a_worker(guarded: ServerThread) -> None:
    worker = FakeWorker(guarded.channel, worker_id="w-x", pool="auth", metadata=bearer("ci-main"))
    error = worker.ended()
    assert isinstance(error, grpc.RpcError)
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "token 'ci-main' is not a worker token"


def test_a_worker_token_connects_and_is_welcomed(guarded: ServerThread) -> None:
    worker = FakeWorker(guarded.channel, worker_id="w-a", pool="auth", metadata=bearer("worker-a"))
    assert worker.receive().WhichOneof("message") == "welcome"
    worker.close()


def test_a_worker_publishes_only_the_result_of_the_action_it_holds(guarded: ServerThread) -> None:
    """SEC-006 (§5 ``role: worker`` may publish its results): a worker token with read scope
    may PutManifest under the key of an action it holds a live lease on, and nowhere else;
    once its result is in, the lease is gone and so is the right."""
    built = build_action(pool="auth-publish")
    upload_as(guarded, "ci-main", built.blobs)
    worker = FakeWorker(
        guarded.channel, worker_id="w-pub", pool="auth-publish", metadata=bearer("worker-a")
    )
    try:
        assert worker.receive().WhichOneof("message") == "welcome"
        updates = execute(guarded.channel, built, metadata=bearer("ci-main"))
        lease = worker.receive()
        assert lease.WhichOneof("message") == "lease"
        put = guarded.manifests().PutManifest
        leased = dataclasses.replace(
            stored_manifest(guarded, "leased-result", token="worker-a"), key=built.action.key
        )
        reply = put(put_request(leased), metadata=bearer("worker-a"), timeout=20)
        assert reply.created
        other = stored_manifest(guarded, "not-leased", token="worker-a")
        with pytest.raises(grpc.RpcError) as info:
            put(put_request(other), metadata=bearer("worker-a"), timeout=20)
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert info.value.details() == (
            "token 'worker-a' is a worker token: it may publish only the result of an action "
            f"it holds a lease on (key {other.key.hex} in namespace 'main' is not one)"
        )
        worker.result(lease.lease.lease_id, leased.to_json())
        kinds = [u.WhichOneof("update") for u in updates.kinds_until_end()]
        assert kinds[-1] == "completed"
        again = dataclasses.replace(leased, duration_ms=leased.duration_ms + 1)
        with pytest.raises(grpc.RpcError) as info:
            put(put_request(again), metadata=bearer("worker-a"), timeout=20)
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    finally:
        worker.close()
