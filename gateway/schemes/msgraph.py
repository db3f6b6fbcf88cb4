"""Microsoft Graph change notifications: the subscriber's `clientState`, echoed in every item.

Graph signs nothing. A subscription names a `clientState` (up to 255 characters) and Graph
copies it into each item of the JSON body it POSTs, `{"value": [{"clientState": ...}, ...]}`;
that value is the route's secret. A notification passes only when every item carries one of the
configured secrets, compared as UTF-8 bytes in constant time.

The secret is inside the body, so this is the one scheme that parses before it has verified
(docs/decisions/0007-msgraph-parses-to-verify.md): the body is already bounded by
`max_body_bytes`, the parse is strict (one JSON object, duplicate keys refused, nesting bounded
by the parser) and its result is thrown away.

Subscribing: Graph POSTs `?validationToken=<URL-encoded token>` with an empty body and no
credential at all, and wants the decoded token back as text/plain within 10 s. The verifier
passes exactly that shape (empty body, one `validationToken`, nothing else to forward) so that
`MsgraphChallenge` may answer it; the answer echoes the token only when it is short printable
text without markup characters. Nothing of such a request is ever forwarded or spooled.
"""

from __future__ import annotations

import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

from gateway.reader import Problems, Reader
from gateway.schemes.base import (
    FAIL_MALFORMED,
    FAIL_MISMATCH,
    FAIL_MISSING,
    MALFORMED,
    OK_NO_INDEX,
    Signature,
    Signed,
    SigResult,
    ToSign,
    VerifyConfig,
    indexed,
    query_values,
)
from gateway.schemes.handshake import HandshakeAnswer

VALIDATION_TOKEN = "validationToken"  # noqa: S105 (a query field name)
MAX_CLIENT_STATE = 255  # Graph's own limit on clientState, in characters
# Graph's tokens are opaque text (today a sentence with spaces, colons and a GUID). Echoed in a
# body, so: bounded, printable ASCII, none of the characters markup or a header would need.
_SAFE_TOKEN = re.compile(r"[A-Za-z0-9 ._~:;,+=/()@!*-]{1,1024}")
_MAX_QUERY_FIELDS = 16


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two `clientState` (or `value`) keys would let the gateway and the bot read different ones.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Duplicate("duplicate key")
    return obj


def validation_token(req: Signed) -> str | None:
    """The decoded token when `req` has the shape of Graph's validation POST, else None.

    The shape: an empty body and exactly one `validationToken` in the query (other query
    fields are allowed: the notification URL may carry its own).
    """
    if req.body or VALIDATION_TOKEN not in req.query:
        return None
    tokens = query_values(req.query, VALIDATION_TOKEN, _MAX_QUERY_FIELDS)
    return tokens[0] if tokens is not None and len(tokens) == 1 else None


def client_states(body: bytes) -> list[bytes] | None:
    """Every item's clientState as UTF-8 bytes ('' when absent), or None when the body is not
    a notification collection (not strict JSON, no non-empty `value` list of objects)."""
    try:
        data = json.loads(body, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    items = data.get("value")
    if not isinstance(items, list) or not items:
        return None
    states: list[bytes] = []
    for item in items:
        if not isinstance(item, dict):
            return None
        state = item.get("clientState", "")
        if not isinstance(state, str):
            return None
        states.append(state.encode("utf-8", "surrogatepass"))
    return states


@dataclass(frozen=True, repr=False)
class MsgraphVerifier:
    secrets: tuple[tuple[int, bytes], ...]

    def __repr__(self) -> str:
        return f"MsgraphVerifier(secrets={len(self.secrets)})"

    def verify(self, req: Signed) -> SigResult:
        if not req.body:
            # Graph's unauthenticated validation POST: "verified" only for the gateway to answer
            # it (MsgraphChallenge answers every request of this shape: none goes upstream).
            if VALIDATION_TOKEN not in req.query:
                return FAIL_MISSING
            return OK_NO_INDEX if validation_token(req) is not None else FAIL_MALFORMED
        states = client_states(req.body)
        if states is None:
            return FAIL_MALFORMED
        first: int | None = None
        all_matched = True
        for state in states:
            matched: int | None = None
            for index, secret in self.secrets:  # every secret, every item: no early exit
                if hmac.compare_digest(state, secret) and matched is None:
                    matched = index
            if matched is None:
                all_matched = False
            elif first is None:
                first = matched
        if not all_matched:
            return FAIL_MISSING if all(not s for s in states) else FAIL_MISMATCH
        return SigResult(True, None, first)


@dataclass(frozen=True, slots=True)
class MsgraphChallenge:
    """Answers the validation POST; a notification (non-empty body) is not a handshake."""

    def answer(self, req: Signed) -> HandshakeAnswer | None:
        if req.body:
            return None
        token = validation_token(req)
        if token is None or not _SAFE_TOKEN.fullmatch(token):
            # Never None here: an empty-bodied request that got this far must not go upstream.
            return HandshakeAnswer(400, reason=MALFORMED)
        return HandshakeAnswer(200, token.encode("ascii"))


class MsgraphScheme:
    name = "msgraph"
    option_keys: frozenset[str] = frozenset()
    # Graph sends no delivery id header; subscriptionId + resource + changeType are in the body.
    replay_header = None

    def check_secret(self, value: bytes) -> str | None:
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            return "a clientState is text (UTF-8)"
        if len(text) > MAX_CLIENT_STATE:
            return f"a clientState is at most {MAX_CLIENT_STATE} characters (Microsoft Graph's limit)"
        return None

    def parse_options(self, r: Reader, problems: Problems) -> None:
        return None

    def build(self, verify: VerifyConfig) -> MsgraphVerifier:
        return MsgraphVerifier(indexed(verify))

    def build_challenge(self, verify: VerifyConfig) -> MsgraphChallenge:
        return MsgraphChallenge()

    def sign(self, verify: VerifyConfig, req: ToSign) -> Signature:
        """Graph adds no header: the body itself must carry the clientState in every item."""
        states = client_states(req.body)
        secret = verify.secrets[0].value
        if states is None:
            raise ValueError('the body is not a notification collection ({"value": [...]})')
        if any(not hmac.compare_digest(s, secret) for s in states):
            raise ValueError("every item of the body needs the route's first clientState")
        return Signature((), req.query)
