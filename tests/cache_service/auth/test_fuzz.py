"""Random tokens and metadata never crash authentication (SEC-002): the answer is always an
identity, UNAUTHENTICATED or PERMISSION_DENIED."""

from __future__ import annotations

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache_service.auth import METHOD_ACCESS, TokenAuthority, parse_tokens
from hazremote.wire.haz.remote.v1 import cache_pb2
from tests.cache_service.auth.authkit import SECRETS, code_of, get_request, tokens_yaml
from tests.cache_service.server.serverkit import BLAKE3, ServerThread

AUTHORITY = TokenAuthority(parse_tokens(tokens_yaml(anonymous="{namespaces: [main]}"), source="t"))
_secrets = st.sampled_from(sorted(SECRETS.values()))
_header_values = st.one_of(
    st.text(),
    st.builds(lambda s: f"Bearer {s}", st.text()),
    st.builds(lambda s: f"Bearer {s}", _secrets),
)


@settings(max_examples=300)
@given(
    method=st.one_of(st.sampled_from(sorted(METHOD_ACCESS)), st.text()),
    metadata=st.dictionaries(
        st.one_of(st.just("authorization"), st.text()), _header_values, max_size=4
    ),
    namespace=st.text(),
)
def test_authority_answers_every_input_with_identity_or_permission_error(
    method: str, metadata: dict[str, str], namespace: str
) -> None:
    """SEC-002: arbitrary text (including lone surrogates) only ever yields an identity or a
    PermissionError (UNAUTHENTICATED / PERMISSION_DENIED), never another exception."""
    try:
        identity = AUTHORITY.authenticate(method=method, metadata=metadata)
        AUTHORITY.authorize(identity, method=method, namespace=namespace)
    except PermissionError:
        pass


_printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
_keys = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=12).map(
    lambda k: f"x-{k}"
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    header=st.one_of(
        st.none(), _printable, st.builds(lambda s: f"Bearer {s}", st.one_of(_printable, _secrets))
    ),
    extra=st.lists(st.tuples(_keys, _printable), max_size=3),
    namespace=st.sampled_from(["main", "pr-9", "team-b", "x"]),
)
def test_server_answers_random_credentials_with_auth_statuses_only(
    guarded: ServerThread,
    header: str | None,
    extra: list[tuple[str, str]],
    namespace: str,
) -> None:
    """SEC-002 over real gRPC: random authorization headers and metadata get OK,
    UNAUTHENTICATED or PERMISSION_DENIED — and the server keeps serving."""
    metadata = list(extra)
    if header is not None:
        metadata.append(("authorization", header))
    allowed = {
        grpc.StatusCode.OK,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
    stubs = guarded
    calls = [
        (stubs.manifests().GetManifest, get_request(b"k" * 32, namespace)),
        (stubs.capabilities().GetCapabilities, cache_pb2.GetCapabilitiesRequest()),
        (
            stubs.content().FindMissingBlobs,
            cache_pb2.FindMissingBlobsRequest(hash_function=BLAKE3),
        ),
    ]
    for call, request in calls:
        assert code_of(call, request, metadata=tuple(metadata)) in allowed
