"""Microsoft Graph: clientState in every item, and the unauthenticated validation POST."""

from __future__ import annotations

import json

import pytest

from gateway.schemes.msgraph import MsgraphChallenge, MsgraphScheme, client_states
from tests.support.schemes import config_problems, signed, verifier

STATE = "secretClientValue-4a7c"
OLD = "previous-client-state"
ENV = {"GRAPH_STATE": STATE, "GRAPH_OLD": OLD}
VERIFY = {"scheme": "msgraph", "secrets": ["env:GRAPH_STATE", "env:GRAPH_OLD"]}
NOW = 1_700_000_000.0
# Graph's subscription validation token, as it sends it (URL-encoded in the query).
TOKEN = "Validation: Testing client application reachability for subscription Request-Id: 522a8e7e-096a"
TOKEN_QUERY = "validationToken=" + (
    "Validation%3a+Testing+client+application+reachability+for+subscription+Request-Id%3a+522a8e7e-096a"
)


def item(state: object = STATE, **extra: object) -> dict[str, object]:
    # The shape of a changeNotification (learn.microsoft.com/graph/api/resources/changenotification).
    d: dict[str, object] = {
        "subscriptionId": "7f105c7d-2dc5-4530-97cd-4e7ae6534c07",
        "subscriptionExpirationDateTime": "2026-12-01T18:23:45.9356913+00:00",
        "changeType": "created",
        "resource": "Users/abc/Messages/def",
        "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
    }
    if state is not None:
        d["clientState"] = state
    d.update(extra)
    return d


def body(*items: dict[str, object]) -> bytes:
    return json.dumps({"value": list(items)}).encode()


def check(payload: bytes, query: str = "") -> tuple[bool, str | None, int | None]:
    r = verifier(VERIFY, ENV).verify(signed({"Content-Type": "application/json"}, payload, NOW, query))
    return r.ok, r.reason, r.secret_index


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (body(item()), (True, None, 0)),
        (body(item(), item(), item()), (True, None, 0)),
        (body(item(OLD)), (True, None, 1)),  # rotation: the previous clientState still passes
        (body(item(OLD), item(STATE)), (True, None, 1)),  # each item may carry either
        (body(item(), item("forged")), (False, "mismatch", None)),  # every item must match
        (body(item("forged")), (False, "mismatch", None)),
        (body(item(STATE + "x")), (False, "mismatch", None)),
        (body(item(STATE[:-1])), (False, "mismatch", None)),
        (body(item("")), (False, "missing", None)),
        (body(item(None)), (False, "missing", None)),
        (body(item(), item(None)), (False, "mismatch", None)),
        (body(item(7)), (False, "malformed", None)),
        (body(), (False, "malformed", None)),  # nothing authenticated
        (b'{"value": {}}', (False, "malformed", None)),
        (b'{"value": ["x"]}', (False, "malformed", None)),
        (b"[]", (False, "malformed", None)),
        (b"not json", (False, "malformed", None)),
        (b'{"value": [{"clientState": "' + STATE.encode() + b'"}]', (False, "malformed", None)),
        # Two clientState keys: the gateway and the bot could read different ones.
        (
            b'{"value": [{"clientState": "forged", "clientState": "' + STATE.encode() + b'"}]}',
            (False, "malformed", None),
        ),
        (b'{"value": [], "value": [{"clientState": "' + STATE.encode() + b'"}]}', (False, "malformed", None)),
        (b"[" * 100_000 + b"]" * 100_000, (False, "malformed", None)),  # nesting: refused, never raised
        (b'{"value": [{"clientState": "\\ud800"}]}', (False, "mismatch", None)),  # lone surrogate
    ],
)
def test_notifications(payload: bytes, expected: tuple[bool, str | None, int | None]) -> None:
    assert check(payload) == expected


def test_a_one_byte_change_to_the_client_state_fails() -> None:
    genuine = body(item())
    assert check(genuine)[0]
    at = genuine.index(STATE.encode())
    assert check(genuine[:at] + b"t" + genuine[at + 1 :]) == (False, "mismatch", None)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (TOKEN_QUERY, (True, None, None)),  # the validation shape: passed so that it can be answered
        ("tenant=a&" + TOKEN_QUERY, (True, None, None)),
        ("validationToken=", (True, None, None)),  # the shape holds; the answer refuses it
        ("", (False, "missing", None)),
        ("other=1", (False, "missing", None)),
        (TOKEN_QUERY + "&validationToken=x", (False, "malformed", None)),
        ("validationToken=%ff", (False, "malformed", None)),
        ("validationToken=x" + "&a=1" * 20, (False, "malformed", None)),
    ],
)
def test_the_validation_shape(query: str, expected: tuple[bool, str | None, int | None]) -> None:
    assert check(b"", query) == expected


def test_a_validation_token_with_a_body_is_a_notification() -> None:
    # Only an empty body is a validation request: a body must authenticate itself.
    assert check(body(item("forged")), TOKEN_QUERY) == (False, "mismatch", None)
    assert check(body(item()), TOKEN_QUERY) == (True, None, 0)


@pytest.mark.parametrize(
    ("query", "status", "answer"),
    [
        (TOKEN_QUERY, 200, TOKEN.encode()),
        ("validationToken=abc-123_XYZ", 200, b"abc-123_XYZ"),
        ("validationToken=a%2Bb%3D%2F", 200, b"a+b=/"),
        ("validationToken=", 400, b""),
        ("validationToken=%3Cscript%3Ealert(1)%3C%2Fscript%3E", 400, b""),  # never reflected
        ("validationToken=%22quoted%22", 400, b""),
        ("validationToken=a%0D%0AX-Injected:%201", 400, b""),
        ("validationToken=%C3%A9", 400, b""),  # non-ASCII
        ("validationToken=" + "x" * 1025, 400, b""),
        ("validationToken=" + "x" * 1024, 200, b"x" * 1024),
        ("validationToken=a&validationToken=b", 400, b""),
    ],
)
def test_validation_answers(query: str, status: int, answer: bytes) -> None:
    got = MsgraphChallenge().answer(signed({}, b"", NOW, query))
    assert got is not None
    assert (got.status, got.body) == (status, answer)
    assert got.content_type.startswith("text/plain")


def test_a_notification_is_not_a_handshake() -> None:
    assert MsgraphChallenge().answer(signed({}, body(item()), NOW, TOKEN_QUERY)) is None


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        ("x" * 256, "at most 255 characters"),
        ("\udcff", "UTF-8"),
    ],
)
def test_client_state_limits(state: str, problem: str) -> None:
    env = {"GRAPH_STATE": state}
    problems = config_problems({"scheme": "msgraph", "secrets": ["env:GRAPH_STATE"]}, env)
    assert any(problem in p for p in problems), problems


def test_no_options() -> None:
    problems = config_problems({"scheme": "msgraph", "secrets": ["env:GRAPH_STATE"], "header": "X"}, ENV)
    assert any("verify.header: unknown key" in p for p in problems), problems


def test_repr_hides_the_client_state() -> None:
    assert STATE not in repr(verifier(VERIFY, ENV))


def test_sign_checks_the_body_carries_the_client_state() -> None:
    from gateway.schemes.base import ToSign
    from tests.support.schemes import verify_config

    v = verify_config(VERIFY, ENV)
    assert MsgraphScheme().sign(v, ToSign(body(item()), 0)).headers == ()
    with pytest.raises(ValueError, match="first clientState"):
        MsgraphScheme().sign(v, ToSign(body(item(OLD)), 0))
    with pytest.raises(ValueError, match="notification collection"):
        MsgraphScheme().sign(v, ToSign(b"{}", 0))
    assert client_states(body(item(), item(OLD))) == [STATE.encode(), OLD.encode()]
