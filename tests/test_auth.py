"""Authentication: users and roles, argon2id passwords, throttled logins, JWT access tokens, the CLI.

Real argon2id at the production parameters and real PyJWT throughout (each hash costs ~30 ms, so the tests
keep their number of password checks small).
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import jwt
import pytest
from argon2 import PasswordHasher, extract_parameters
from support import grace

from grace_core import ManualClock, Message, Workspace, open_workspace, projection_differences, replay
from grace_core.auth import (
    ACCOUNT_LIMIT,
    AUDIENCE,
    MAX_PASSWORD,
    PAIR_FREE_FAILURES,
    SOURCE_LIMIT,
    password_problem,
)
from grace_core.errors import (
    AuthError,
    PermissionDenied,
    ReadOnlyError,
    ThrottledError,
    TokenError,
    WeakPasswordError,
)

ALICE_PW = "correct horse battery"
BOB_PW = "bob's long passphrase"
INVALID = r"^invalid user name or password$"  # the one answer to every failed login


@pytest.fixture(autouse=True)
def _no_env_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRACE_JWT_SECRET", raising=False)


@pytest.fixture
def alice(ws: Workspace) -> Workspace:
    """A workspace whose first user, alice, is an admin created by the local operator."""
    ws.auth.register("alice", ALICE_PW, role="admin", by="system")
    return ws


def _topics(ws: Workspace, prefix: str = "auth.") -> list[str]:
    return [t for t in ws.events()["topic"] if t.startswith(prefix)]


def _secret(ws: Workspace) -> bytes:
    secret = ws.secrets.get("jwt_secret")
    assert secret is not None
    return secret


# -- users and roles -------------------------------------------------------------------------------------------
def test_the_first_user_is_an_admin_made_by_the_operator(ws: Workspace) -> None:
    with pytest.raises(AuthError, match="first user of a workspace must be an admin"):
        ws.auth.register("rita", BOB_PW, role="researcher", by="system")
    with pytest.raises(PermissionDenied, match="mallory may not create users: no policy allows"):
        ws.auth.register("mallory", BOB_PW, role="admin", by="mallory")  # nobody can make themselves admin
    user = ws.auth.register("alice", ALICE_PW, role="admin", by="system")
    assert (user.name, user.role, user.disabled, user.created_by) == ("alice", "admin", False, "system")
    assert ws.auth.role_of("alice") == "admin"
    assert ws.auth.role_of("hunter") == "system"
    assert ws.auth.role_of("system") == "system"
    assert ws.auth.role_of("mallory") is None
    registered = ws.events(topic="auth.user_registered")
    assert list(registered["actor"]) == ["system"]
    assert registered["payload"].iloc[0] == {"name": "alice", "role": "admin"}


def test_only_admins_create_users_and_change_roles(alice: Workspace) -> None:
    ws = alice
    ws.auth.register("bob", BOB_PW, role="researcher", by="alice")
    with pytest.raises(PermissionDenied):
        ws.auth.register("carol", "carol's passphrase", role="viewer", by="bob")
    with pytest.raises(PermissionDenied):
        ws.auth.set_role("bob", "admin", by="bob")
    with pytest.raises(PermissionDenied):
        ws.auth.disable("alice", by="bob")
    assert list(ws.auth.users()["name"]) == ["alice", "bob"]
    assert ws.auth.set_role("bob", "viewer", by="alice").role == "viewer"
    assert ws.auth.role_of("bob") == "viewer"
    changed = ws.events(topic="auth.role_changed")["payload"].iloc[-1]
    assert changed == {"name": "bob", "from": "researcher", "to": "viewer"}
    # The workspace always keeps an enabled admin.
    with pytest.raises(AuthError, match="last admin"):
        ws.auth.set_role("alice", "viewer", by="alice")
    with pytest.raises(AuthError, match="last admin"):
        ws.auth.disable("alice", by="system")
    # Names are unique regardless of case, and service actors' names are not for users.
    with pytest.raises(AuthError, match="exists already"):
        ws.auth.register("Bob", BOB_PW, role="viewer", by="alice")
    with pytest.raises(AuthError, match="reserved"):
        ws.auth.register("hunter", BOB_PW, role="viewer", by="alice")


def test_user_management_is_decided_by_policy_and_recorded(alice: Workspace) -> None:
    ws = alice
    ws.auth.register("bob", BOB_PW, role="researcher", by="alice")
    with pytest.raises(PermissionDenied, match=r"bob may not create users: .*users-managed-by-admins"):
        ws.auth.register("carol", "carol's passphrase", role="viewer", by="bob")
    # An admin is governed too: a policy can freeze user creation, and the refusal is explained.
    ws.governance.add_policy(
        {"id": "freeze-users", "effect": "deny", "roles": ["admin"], "actions": ["auth.user.create"]},
        actor="system",
    )
    with pytest.raises(PermissionDenied, match="alice may not create users: policy 'freeze-users'"):
        ws.auth.register("carol", "carol's passphrase", role="viewer", by="alice")
    assert list(ws.auth.users()["name"]) == ["alice", "bob"]
    decisions = ws.events(topic="governance.decision")
    asked = [
        (e.actor, e.payload["action"], e.resource, e.payload["effect"])
        for e in decisions.itertuples()
        if e.payload["action"] == "auth.user.create"
    ]
    assert asked[-3:] == [
        ("alice", "auth.user.create", "user:bob", "allow"),
        ("bob", "auth.user.create", "user:carol", "deny"),
        ("alice", "auth.user.create", "user:carol", "deny"),
    ]


def test_register_login_verify_logout(alice: Workspace, clock: ManualClock) -> None:
    ws = alice
    session = ws.auth.login("alice", ALICE_PW, source="198.51.100.20")
    assert session.token not in repr(session)
    claims = ws.auth.verify_token(session.token)
    assert claims == session.claims
    assert (claims.sub, claims.role, claims.typ, claims.aud, claims.iss) == (
        "alice",
        "admin",
        "access",
        AUDIENCE,
        ws.origin,
    )
    assert claims.iat == int(clock.time())
    assert claims.exp - claims.iat == 3600
    succeeded = ws.events(topic="auth.login_succeeded")
    assert list(succeeded["actor"]) == ["alice"]
    assert succeeded["payload"].iloc[0]["source"] == "198.51.100.20"
    assert succeeded["payload"].iloc[0]["jti"] == claims.jti

    assert ws.auth.logout(session.token) is True
    with pytest.raises(TokenError, match="logged out"):
        ws.auth.verify_token(session.token)
    assert ws.auth.logout(session.token) is False  # once is enough
    assert ws.sql("SELECT jti FROM revoked_tokens")["jti"].tolist() == [claims.jti]
    # Other sessions of the same user are not affected.
    other = ws.auth.login("alice", ALICE_PW)
    assert ws.auth.verify_token(other.token).sub == "alice"


def test_change_password(alice: Workspace) -> None:
    ws = alice
    before = ws.auth.login("alice", ALICE_PW)
    with pytest.raises(AuthError, match=INVALID):
        ws.auth.change_password("alice", "not the password", "a brand new passphrase")
    failed = ws.events(topic="auth.login_failed")["payload"].iloc[-1]
    assert failed["purpose"] == "change_password"
    assert failed["reason"] == "bad_password"
    with pytest.raises(WeakPasswordError):
        ws.auth.change_password("alice", ALICE_PW, "password123")
    ws.auth.change_password("alice", ALICE_PW, "a brand new passphrase")
    assert ws.events(topic="auth.password_changed")["payload"].iloc[-1] == {"name": "alice", "reset": False}
    with pytest.raises(AuthError):
        ws.auth.login("alice", ALICE_PW)
    assert ws.auth.login("alice", "a brand new passphrase").name == "alice"
    with pytest.raises(TokenError, match=r"password .* changed"):
        ws.auth.verify_token(before.token)  # tokens from before the change die with the old password


def test_a_disabled_user_cannot_log_in_and_their_tokens_die(alice: Workspace) -> None:
    ws = alice
    ws.auth.register("bob", BOB_PW, role="researcher", by="alice")
    token = ws.auth.login("bob", BOB_PW).token
    ws.auth.disable("bob", by="alice", reason="left the project")
    assert ws.auth.role_of("bob") is None
    with pytest.raises(TokenError, match="disabled"):
        ws.auth.verify_token(token)
    with pytest.raises(AuthError, match=INVALID):
        ws.auth.login("bob", BOB_PW)  # the right password, but the caller learns nothing more
    with pytest.raises(AuthError, match=INVALID):
        ws.auth.login("nobody", BOB_PW)
    reasons = [p["reason"] for p in ws.events(topic="auth.login_failed")["payload"]]
    assert reasons == ["disabled", "unknown_user"]
    ws.auth.enable("bob", by="alice")
    assert ws.auth.login("bob", BOB_PW).role == "researcher"


def test_a_role_change_retires_tokens_of_the_old_role(alice: Workspace) -> None:
    ws = alice
    ws.auth.register("bob", BOB_PW, role="admin", by="alice")
    token = ws.auth.login("bob", BOB_PW).token
    ws.auth.set_role("bob", "viewer", by="alice")
    with pytest.raises(TokenError, match=r"role .* changed"):
        ws.auth.verify_token(token)


# -- passwords -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("short7!", "at least 8 characters"),
        ("ab" * (MAX_PASSWORD // 2) + "c", f"at most {MAX_PASSWORD}"),
        ("password123", "most common"),
        ("Password1", "most common"),
        ("QWERTYUIOP", "most common"),
        ("alice.smith", "user name"),
        ("ALICE.SMITH", "user name"),
        ("zzzzzzzzzzzz", "repeated"),
    ],
)
def test_weak_passwords_are_refused(ws: Workspace, password: str, problem: str) -> None:
    with pytest.raises(WeakPasswordError, match=problem):
        ws.auth.register("alice.smith", password, role="admin", by="system")
    assert ws.auth.users().empty
    assert _topics(ws) == []


def test_password_rules_at_their_bounds() -> None:
    assert password_problem("x1" * 4) is None  # exactly 8 characters
    assert password_problem("ab" * (MAX_PASSWORD // 2)) is None  # exactly the maximum
    assert password_problem("Tr0ub4dor&3 horse") is None
    # Unicode is normalised (NFKC) before length and hashing: full-width letters count as their plain form.
    assert password_problem(
        "\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44"
    )  # "password", full width is not None


def test_hashes_are_argon2id_at_owasp_strength_and_upgraded_on_login(alice: Workspace) -> None:
    ws = alice
    stored = ws.sql("SELECT hash FROM credentials WHERE name = 'alice'")["hash"].iloc[0]
    params = extract_parameters(stored)
    assert stored.startswith("$argon2id$")
    assert params.memory_cost >= 19456
    assert params.time_cost >= 2
    assert params.parallelism == 1
    # A later release raises the parameters: the next successful login re-hashes with them.
    ws.auth.hasher = PasswordHasher(time_cost=3, memory_cost=19456, parallelism=1)
    ws.auth.login("alice", ALICE_PW)
    upgraded = ws.sql("SELECT hash FROM credentials WHERE name = 'alice'")["hash"].iloc[0]
    assert upgraded != stored
    assert extract_parameters(upgraded).time_cost == 3
    assert ws.auth.login("alice", ALICE_PW).name == "alice"


def test_unknown_users_take_as_long_as_wrong_passwords(alice: Workspace) -> None:
    def timed(name: str) -> float:
        started = time.perf_counter()
        with pytest.raises(AuthError, match=INVALID):
            alice.auth.login(name, "not the password", source=f"probe-{name}")
        return time.perf_counter() - started

    wrong = statistics.median(timed("alice") for _ in range(3))
    unknown = statistics.median(timed("zed") for _ in range(3))
    # Both cost one argon2 verification; without the dummy hash an unknown name would answer ~30x sooner.
    assert unknown > 0.5 * wrong


# -- tokens ----------------------------------------------------------------------------------------------------
def _b64(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part, separators=(",", ":")).encode()).rstrip(b"=").decode()


def _claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


Forge = Callable[[str, dict[str, Any], bytes], str]

FORGERIES: dict[str, tuple[Forge, str]] = {
    "other secret": (
        lambda tok, c, key: jwt.encode(c, os.urandom(32), algorithm="HS256"),
        "signature does not verify",
    ),
    "alg none": (lambda tok, c, key: f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(c)}.", "algorithm"),
    "alg HS512 with the right secret": (
        lambda tok, c, key: jwt.encode(c, key, algorithm="HS512"),
        "algorithm",
    ),
    "tampered payload": (
        lambda tok, c, key: ".".join([tok.split(".")[0], _b64({**c, "role": "admin"}), tok.split(".")[2]]),
        "signature does not verify",
    ),
    "wrong audience": (
        lambda tok, c, key: jwt.encode({**c, "aud": "another-app"}, key),
        "not for grace-workbench",
    ),
    "wrong issuer": (
        lambda tok, c, key: jwt.encode({**c, "iss": "grace-workbench/another"}, key),
        "another workspace",
    ),
    "wrong type": (lambda tok, c, key: jwt.encode({**c, "typ": "refresh"}, key), "type 'refresh'"),
    "missing jti": (
        lambda tok, c, key: jwt.encode({k: v for k, v in c.items() if k != "jti"}, key),
        "lacks the 'jti' claim",
    ),
    "issued in the future": (
        lambda tok, c, key: jwt.encode({**c, "iat": c["iat"] + 600, "exp": c["exp"] + 600}, key),
        "future",
    ),
    "iat not a number": (lambda tok, c, key: jwt.encode({**c, "iat": "yesterday"}, key), "not an integer"),
    "not a JWT": (lambda tok, c, key: "hello.world", "malformed"),
}


@pytest.mark.parametrize("case", list(FORGERIES))
def test_refused_tokens(alice: Workspace, case: str) -> None:
    ws = alice
    ws.auth.register("vic", "vic's long passphrase", role="viewer", by="alice")
    token = ws.auth.login("vic", "vic's long passphrase").token
    forge, message = FORGERIES[case]
    forged = forge(token, _claims_of(token), _secret(ws))
    with pytest.raises(TokenError, match=message):
        ws.auth.verify_token(forged)
    assert ws.auth.verify_token(token).role == "viewer"  # the genuine token still works


def test_tokens_expire_on_the_workspace_clock(alice: Workspace, clock: ManualClock) -> None:
    token = alice.auth.login("alice", ALICE_PW, ttl=600).token
    clock.advance(599)
    assert alice.auth.verify_token(token).sub == "alice"
    clock.advance(1)
    with pytest.raises(TokenError, match="expired"):
        alice.auth.verify_token(token)
    assert alice.auth.logout(token) is False  # nothing to revoke


def test_a_token_of_another_workspace_is_refused(alice: Workspace) -> None:
    token = alice.auth.login("alice", ALICE_PW).token
    with open_workspace(":memory:", clock=ManualClock()) as other:
        other.auth.register("alice", ALICE_PW, role="admin", by="system")
        with pytest.raises(TokenError):
            other.auth.verify_token(token)


def test_the_secret_from_the_environment(alice: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRACE_JWT_SECRET", "too short")
    with pytest.raises(AuthError, match="GRACE_JWT_SECRET is 9 bytes; it needs at least 32"):
        alice.auth.login("alice", ALICE_PW)
    secret = "s" * 8 + "0123456789abcdefghijklmnopqrstuvwxyz"
    monkeypatch.setenv("GRACE_JWT_SECRET", secret)
    token = alice.auth.login("alice", ALICE_PW).token
    # (the ManualClock is not the wall clock PyJWT would judge expiry by)
    decoded = jwt.decode(
        token, secret, algorithms=["HS256"], audience=AUDIENCE, options={"verify_exp": False}
    )
    assert decoded["sub"] == "alice"
    monkeypatch.delenv("GRACE_JWT_SECRET")
    with pytest.raises(TokenError, match="signature"):
        alice.auth.verify_token(token)  # signed with the other secret


def test_the_workspace_secret_is_random_and_kept(file_ws: Callable[..., Workspace]) -> None:
    ws = file_ws(clock=ManualClock())
    first = _secret(ws)
    assert len(first) >= 32
    ws.auth.register("alice", ALICE_PW, role="admin", by="system")
    token = ws.auth.login("alice", ALICE_PW).token
    ws.close()
    again = file_ws(clock=ManualClock())
    assert _secret(again) == first
    assert again.auth.verify_token(token).sub == "alice"  # tokens outlive a restart
    assert _secret(file_ws("other.duckdb")) != first


# -- throttling ------------------------------------------------------------------------------------------------
def _fail(ws: Workspace, name: str, source: str, n: int = 1) -> None:
    for _ in range(n):
        with pytest.raises(AuthError, match=INVALID):
            ws.auth.login(name, "a wrong guess!", source=source)


def test_backoff_per_account_and_source_slides(alice: Workspace, clock: ManualClock) -> None:
    ws = alice
    _fail(ws, "alice", "203.0.113.5", PAIR_FREE_FAILURES)
    with pytest.raises(ThrottledError) as caught:
        ws.auth.login("alice", ALICE_PW, source="203.0.113.5")  # even the right password is not checked now
    assert caught.value.retry_after == pytest.approx(30)
    throttled = ws.events(topic="auth.login_throttled")
    assert list(throttled["actor"]) == ["alice"]
    assert throttled["payload"].iloc[0]["source"] == "203.0.113.5"
    assert throttled["payload"].iloc[0]["rule"] == "account_source"
    # The owner elsewhere is not affected.
    assert ws.auth.login("alice", ALICE_PW, source="198.51.100.1").name == "alice"
    # Backoff doubles with each further failure: 30 s, then 60 s.
    clock.advance(29)
    with pytest.raises(ThrottledError) as caught:
        ws.auth.login("alice", ALICE_PW, source="203.0.113.5")
    assert caught.value.retry_after == pytest.approx(1)
    clock.advance(1)
    _fail(ws, "alice", "203.0.113.5")
    with pytest.raises(ThrottledError) as caught:
        ws.auth.login("alice", ALICE_PW, source="203.0.113.5")
    assert caught.value.retry_after == pytest.approx(60)
    # The window slides: 15 minutes after the last failure the pair starts afresh.
    clock.advance(minutes=15)
    assert ws.auth.login("alice", ALICE_PW, source="203.0.113.5").name == "alice"
    _fail(ws, "alice", "203.0.113.5", PAIR_FREE_FAILURES - 1)  # the success reset the count
    assert ws.auth.login("alice", ALICE_PW, source="203.0.113.5").name == "alice"


def test_throttling_survives_a_restart(file_ws: Callable[..., Workspace]) -> None:
    clock = ManualClock()
    ws = file_ws(clock=clock)
    ws.auth.register("alice", ALICE_PW, role="admin", by="system")
    _fail(ws, "alice", "203.0.113.5", PAIR_FREE_FAILURES)
    ws.close()
    clock.advance(10)
    reopened = file_ws(clock=clock)
    with pytest.raises(ThrottledError) as caught:
        reopened.auth.login("alice", ALICE_PW, source="203.0.113.5")
    assert caught.value.retry_after == pytest.approx(20)


def test_an_attacker_on_one_source_never_locks_the_owner_out(alice: Workspace, clock: ManualClock) -> None:
    ws = alice
    failures = throttled = 0
    end = clock.time() + 3600
    while clock.time() < end:  # an hour of guessing as fast as the throttle allows
        try:
            ws.auth.login("alice", "a wrong guess!", source="203.0.113.66")
        except ThrottledError as exc:
            throttled += 1
            clock.advance(exc.retry_after)
        except AuthError:
            failures += 1
    assert throttled > 0
    assert failures < SOURCE_LIMIT < ACCOUNT_LIMIT  # the backoff keeps one source far below the account cap
    # The owner, from a place never used before, gets in at once.
    assert ws.auth.login("alice", ALICE_PW, source="owner-laptop").name == "alice"


def test_password_spraying_from_one_source_is_capped(alice: Workspace, clock: ManualClock) -> None:
    ws = alice
    ws.auth.login("alice", ALICE_PW, source="office")  # alice is known at the office
    for i in range(SOURCE_LIMIT):  # one guess each at many (unknown) names: the pair rule never triggers
        _fail(ws, f"user{i}", "office")
    with pytest.raises(ThrottledError) as caught:
        ws.auth.login("bob", "whatever it is", source="office")
    assert ws.events(topic="auth.login_throttled")["payload"].iloc[-1]["rule"] == "source"
    assert caught.value.retry_after == pytest.approx(3600)
    # A pair that logged in before is exempt (the owner behind the same address), other sources are unaffected.
    assert ws.auth.login("alice", ALICE_PW, source="office").name == "alice"
    clock.advance(hours=1)
    with pytest.raises(AuthError, match=INVALID):
        ws.auth.login("bob", "whatever it is", source="office")  # checked again, not throttled


def test_a_distributed_attack_leaves_the_owners_trusted_source_open(
    alice: Workspace, clock: ManualClock
) -> None:
    ws = alice
    ws.auth.login("alice", ALICE_PW, source="home")
    clock.advance(minutes=5)
    # The history of a botnet: ACCOUNT_LIMIT failures on alice from as many addresses. They are exactly the
    # events failed logins write (checking that many real passwords would only make the test slower).
    ws.publish_many(
        [
            Message(
                "auth.login_failed",
                {
                    "name": "alice",
                    "source": f"10.9.{i // 250}.{i % 250}",
                    "reason": "bad_password",
                    "purpose": "login",
                },
            )
            for i in range(ACCOUNT_LIMIT)
        ],
        actor="alice",
    )
    with pytest.raises(ThrottledError) as caught:
        ws.auth.login("alice", ALICE_PW, source="10.200.0.1")
    assert ws.events(topic="auth.login_throttled")["payload"].iloc[-1]["rule"] == "account"
    assert caught.value.retry_after == pytest.approx(3600)
    assert ws.auth.login("alice", ALICE_PW, source="home").name == "alice"  # the owner's usual place
    clock.advance(hours=1)
    assert ws.auth.login("alice", ALICE_PW, source="10.200.0.1").name == "alice"  # and the cap slides


def test_hammering_a_throttled_login_grows_the_ledger_by_a_bounded_amount(
    alice: Workspace, clock: ManualClock
) -> None:
    ws = alice
    head = ws.ledger.head[0]
    refused = 0
    for i in range(2000):  # ten minutes of guessing, 200 a minute, from one address
        try:
            ws.auth.login("alice", "a wrong guess!", source="203.0.113.77")
        except ThrottledError:
            refused += 1
        except AuthError:
            pass
        if i % 2:
            clock.advance(0.6)
    for i in range(300):  # and spraying many names from another, as fast as the machine goes
        with pytest.raises(AuthError):
            ws.auth.login(f"user{i}", "a wrong guess!", source="203.0.113.78")
    assert refused > 1900
    events = ws.ledger.events(since=head)
    failed = [e for e in events if e.topic == "auth.login_failed"]
    throttled = [e for e in events if e.topic == "auth.login_throttled"]
    assert len(failed) <= 10 + SOURCE_LIMIT  # the throttle bounds failures (backoff; the source cap)
    assert len(throttled) <= 14  # one per minute and rule, not one per refusal
    # Each event says how many refusals it stands for: together, all but those of the last minute.
    reported = sum(e.payload["attempts"] for e in throttled if e.payload["source"] == "203.0.113.77")
    assert refused - 200 <= reported <= refused
    # The throttle itself still works: the pair waits, the owner elsewhere gets in.
    with pytest.raises(ThrottledError):
        ws.auth.login("alice", ALICE_PW, source="203.0.113.77")
    assert ws.auth.login("alice", ALICE_PW, source="owner-laptop").name == "alice"


def test_parallel_guesses_cannot_slip_past_the_throttle(alice: Workspace) -> None:
    outcomes: list[str] = []
    lock = threading.Lock()

    def guess() -> None:
        for _ in range(2):
            try:
                alice.auth.login("alice", "a wrong guess!", source="203.0.113.9")
                result = "in"
            except ThrottledError:
                result = "throttled"
            except AuthError:
                result = "failed"
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=guess) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("failed") == PAIR_FREE_FAILURES
    assert outcomes.count("throttled") == 12 - PAIR_FREE_FAILURES


# -- ledger, replay, secrets -------------------------------------------------------------------------------------
def test_replay_has_the_users_but_no_passwords(alice: Workspace, tmp_path: Path) -> None:
    ws = alice
    ws.auth.register("bob", BOB_PW, role="researcher", by="alice")
    ws.auth.set_role("bob", "viewer", by="alice")
    ws.auth.register("carol", "carol's passphrase", role="researcher", by="alice")
    ws.auth.disable("carol", by="alice")
    ws.auth.logout(ws.auth.login("bob", BOB_PW).token)
    _fail(ws, "bob", "203.0.113.5")
    copy = replay(ws, tmp_path / "replayed.duckdb")
    try:
        assert projection_differences(ws, copy) == {}
        users = copy.auth.users()
        assert users[["name", "role", "disabled"]].values.tolist() == [
            ["alice", "admin", False],
            ["bob", "viewer", False],
            ["carol", "researcher", True],
        ]
        assert not users["has_password"].any()
        with pytest.raises(AuthError, match=INVALID):
            copy.auth.login("bob", BOB_PW)
        assert copy.events(topic="auth.login_failed")["payload"].iloc[-1]["reason"] == "no_password"
        copy.auth.set_password("bob", "bob's new passphrase", by="system")
        assert copy.auth.login("bob", "bob's new passphrase").role == "viewer"
    finally:
        copy.close()


def test_no_secret_reaches_the_ledger_or_a_snapshot(alice: Workspace, tmp_path: Path) -> None:
    ws = alice
    ws.auth.register("bob", BOB_PW, role="researcher", by="alice")
    token = ws.auth.login("bob", BOB_PW).token
    ws.auth.change_password("bob", BOB_PW, "bob's second passphrase")
    ws.auth.set_password("bob", "bob's third passphrase", by="alice")
    _fail(ws, "bob", "203.0.113.5")
    ledger = "\n".join(
        "|".join(str(v) for v in row) for row in ws.con.execute("SELECT * FROM events").fetchall()
    )
    secret = _secret(ws)
    for needle in ["$argon2id$", secret.hex(), base64.b64encode(secret).decode(), token, token.split(".")[2]]:
        assert needle not in ledger
    for password in [ALICE_PW, BOB_PW, "bob's second passphrase", "bob's third passphrase", "a wrong guess!"]:
        assert password not in ledger
    assert ws.sql("SELECT count(*) AS n FROM credentials")["n"].iloc[0] == 2
    snapshot = ws.export_snapshot(tmp_path / "snap.duckdb")
    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM credentials").fetchone() == (0,)
        tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert "workspace_secrets" not in tables
        assert con.execute("SELECT count(*) FROM users").fetchone() == (2,)
    finally:
        con.close()
    assert secret not in snapshot.read_bytes()


def test_a_snapshot_cannot_log_in(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with open_workspace(path, clock=ManualClock()) as ws:
        ws.auth.register("alice", ALICE_PW, role="admin", by="system")
    with open_workspace(path, snapshot=True) as snap:
        assert snap.auth.role_of("alice") == "admin"
        with pytest.raises(ReadOnlyError):
            snap.auth.login("alice", ALICE_PW)


# -- the command line --------------------------------------------------------------------------------------------


@pytest.fixture
def cli_ws(tmp_path: Path) -> Path:
    path = tmp_path / "w.duckdb"
    done = grace("init", "-w", path)
    assert done.returncode == 0, done.stderr
    assert "no users yet: create the first admin with `grace user add NAME --role admin`" in done.stdout
    return path


@pytest.mark.slow
def test_cli_users_login_whoami(cli_ws: Path) -> None:
    w = ("-w", cli_ws)
    added = grace("user", "add", "alice", "--role", "admin", "--password-stdin", *w, stdin=ALICE_PW + "\n")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "added alice (admin)"
    no_tty = grace("user", "add", "bob", "--role", "viewer", *w)
    assert no_tty.returncode == 2
    assert "--password-stdin" in no_tty.stderr

    login = grace("login", "alice", "--password-stdin", *w, stdin=ALICE_PW + "\n")
    assert login.returncode == 0, login.stderr
    token = login.stdout.strip()
    assert token.count(".") == 2  # only the token on stdout
    assert "\n" not in token
    who = grace("whoami", token, "--json", *w)
    assert who.returncode == 0, who.stderr
    claims = json.loads(who.stdout)
    assert (claims["sub"], claims["role"], claims["aud"], claims["typ"]) == (
        "alice",
        "admin",
        AUDIENCE,
        "access",
    )

    wrong = grace("login", "alice", "--password-stdin", *w, stdin="not the password\n")
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == "grace: error: invalid user name or password"

    listed = grace("user", "list", "--json", *w)
    assert [json.loads(line)["name"] for line in listed.stdout.splitlines()] == ["alice"]
    with open_workspace(cli_ws, snapshot=True) as snap:
        topics = _topics(snap)
    assert topics == ["auth.user_registered", "auth.login_succeeded", "auth.login_failed"]


@pytest.mark.slow
def test_cli_roles_disable_and_passwd(cli_ws: Path) -> None:
    w = ("-w", cli_ws)
    with open_workspace(cli_ws) as ws:  # quicker than two more processes
        ws.auth.register("alice", ALICE_PW, role="admin", by="system")
        ws.auth.register("bob", BOB_PW, role="researcher", by="alice")
    role = grace("user", "role", "bob", "viewer", *w)
    assert role.stdout.strip() == "bob is now viewer", role.stderr
    passwd = grace("user", "passwd", "bob", "--password-stdin", *w, stdin=f"{BOB_PW}\nbob's new passphrase\n")
    assert passwd.returncode == 0, passwd.stderr
    token = grace("login", "bob", "--password-stdin", *w, stdin="bob's new passphrase\n").stdout.strip()
    disable = grace("user", "disable", "bob", *w)
    assert disable.returncode == 0, disable.stderr
    refused = grace("whoami", token, *w)
    assert refused.returncode == 2
    assert "disabled" in refused.stderr
    table = grace("user", "list", *w).stdout.splitlines()
    assert table[0].split()[:3] == ["name", "role", "disabled"]
    assert table[2].split()[:3] == ["bob", "viewer", "True"]
