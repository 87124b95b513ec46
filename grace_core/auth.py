"""Users, passwords (argon2id), logins with throttling, JWT access tokens.

Users
    A user has a name, a role (``admin``, ``researcher`` or ``viewer``) and may be disabled. The ``users``
    table is a projection of ``auth.user_registered``, ``auth.role_changed``, ``auth.user_disabled``,
    ``auth.user_enabled`` and ``auth.password_changed`` events. Only an admin, or a service actor of role
    ``system`` (the local operator: the ``grace`` command acts as ``system``), may create users or change
    roles (governance decides ``auth.user.create``, ``.role``, ``.disable``, ``.enable`` and ``.password`` on
    ``user:<name>``: the default pack allows them to admins and the system only); the first user of a
    workspace must be an admin. The last enabled admin cannot be demoted or disabled.

Passwords
    Hashed with argon2id (argon2-cffi, OWASP's minimum: 19 MiB, 2 iterations, 1 lane) and kept in the table
    ``credentials``, which is NOT a projection: no event ever holds a hash, snapshots leave it out, and a
    workspace rebuilt by ``replay`` has every user but no passwords (an operator sets new ones with
    ``set_password``, i.e. ``grace user passwd NAME --reset``). A hash made with other parameters is redone
    at the next successful login. A new password must have 8 to 1024 characters (after Unicode NFKC
    normalisation), differ from the user name, not be one character repeated, and not be on a built-in list
    of the most common passwords.

Logins and throttling
    Every attempt is an event whose actor is the name tried and whose payload holds the source (an address,
    or ``"local"``): ``auth.login_succeeded``, ``auth.login_failed`` (the reason -- ``unknown_user``,
    ``bad_password``, ``disabled``, ``no_password`` -- is recorded, the caller always reads "invalid user
    name or password") and ``auth.login_throttled``. Unknown users cost the same argon2 verification as
    known ones. Throttling is computed from those events (projection ``auth_logins``) on the workspace clock,
    so it survives restarts and replays. Windows slide: there is no permanent lockout. The policy:

    1. Per (account, source) pair: the failures of the last 15 minutes since the pair's last success count.
       From the 5th on, the next attempt waits ``min(30 s * 2**(failures - 5), 15 min)`` after the latest
       failure (30 s, 1 min, 2 min, 4 min, 8 min, then 15 min).
    2. Per source, over all accounts (password spraying): 50 failures in the last hour refuse the source
       until the oldest of them leave the hour.
    3. Per account, over all sources (a distributed attack): 100 failures in the last hour refuse the account
       until the oldest of them leave the hour.

    Refused attempts are aggregated on the ledger: an ``auth.login_throttled`` event is written at most once
    per ``THROTTLE_REPORT_EVERY`` seconds for each rule and what it limits (the pair, the source or the
    account), its ``attempts`` counting the refusals since the previous one. So hammering a throttled login
    grows the ledger by a few events a minute, not one per request; the failures themselves are bounded by
    the rules above. (The throttle is computed from failures and successes only, never from these events.)

    A *trusted* pair -- one that logged in successfully within the last 30 days -- is exempt from rules 2 and
    3 (rule 1 still applies). So an attacker cannot lock the owner out: from one source an attacker never
    reaches the account cap (rule 1 allows about a dozen failures an hour), and even a distributed attack
    that does reach it leaves the owner's usual sources open. Exempting any source "without recent failures"
    instead would hand a botnet one free guess per address and make the cap moot. Throttled attempts check
    no password and do not count as failures. Attempts on one account are serialised in this process, so
    parallel guesses cannot slip past the check together.

Tokens
    JWT access tokens (PyJWT, HS256 pinned on decode) with the claims ``iss`` (the workspace origin), ``aud``
    (``grace-workbench``), ``sub``, ``role``, ``typ`` (``access``), ``iat``, ``exp`` (1 hour by default),
    ``jti`` and ``pwv`` (the user's password version). Times come from the workspace clock, never the wall
    clock. A token is refused (TokenError) when it is malformed, signed with another key or algorithm, for
    another audience or issuer, of another type, expired, issued in the future, logged out (``auth.logout``
    events, projection ``revoked_tokens``), or when its user is gone, disabled, has another role now or has
    changed the password since. The secret is ``$GRACE_JWT_SECRET`` (at least 32 bytes) or else 64 random
    bytes kept among the workspace's secrets (``ws.secrets``, the ``.keys`` file; generated when a writable
    workspace is opened, so ``grace init`` makes one). Secrets are not copied into snapshots or replays:
    tokens verify only where they were issued.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import jwt
import pandas as pd
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from . import settings
from .errors import (
    AuthError,
    ReadOnlyError,
    ThrottledError,
    TokenError,
    WeakPasswordError,
)
from .events import Event
from .times import TS, from_us, to_datetime, to_us

if TYPE_CHECKING:
    from .governance import Governance
    from .ledger import Ledger
    from .workspace import Workspace

__all__ = [
    "AUDIENCE",
    "ROLES",
    "SERVICE_ACTORS",
    "Auth",
    "Claims",
    "Session",
    "User",
    "lookup_role",
    "password_problem",
]

ROLES = ("admin", "researcher", "viewer")
SERVICE_ACTORS = frozenset(
    {
        "system",
        "hunter",
        "scheduler",
        "mesh",
        "metrics",
        "governance",
        "auth",
        "executor",
        "healing",
        "meta",
        "reflection",
        "learning",
    }
)
# Names that may never be registered: the service actors, and names the CLI or tools use for themselves.
RESERVED_NAMES = SERVICE_ACTORS | {"cli", "root", "anonymous"}
AUDIENCE = "grace-workbench"
ALGORITHM = "HS256"
TOKEN_TYPE = "access"  # noqa: S105 - the typ claim, not a secret
DEFAULT_TTL = 3600.0
MAX_TTL = 30 * 86400.0
REQUIRED_CLAIMS = ["iss", "aud", "sub", "role", "typ", "iat", "exp", "jti", "pwv"]
SECRET_ENV = str(settings.JWT_SECRET.env)
SECRET_NAME = str(settings.JWT_SECRET.secret)
MIN_SECRET_BYTES = 32
MAX_TOKEN_CHARS = 8192

# argon2id at OWASP's minimum (m=19 MiB, t=2, p=1): about 30 ms a hash on one core.
ARGON2_TIME_COST = 2
ARGON2_MEMORY_KIB = 19456
ARGON2_PARALLELISM = 1
MIN_PASSWORD = 8
MAX_PASSWORD = 1024

# Throttling (see the module docstring).
PAIR_WINDOW = 15 * 60.0
PAIR_FREE_FAILURES = 5
PAIR_BASE_DELAY = 30.0
PAIR_MAX_DELAY = 15 * 60.0
SOURCE_WINDOW = 3600.0
SOURCE_LIMIT = 50
ACCOUNT_WINDOW = 3600.0
ACCOUNT_LIMIT = 100
TRUSTED_FOR = 30 * 86400.0
THROTTLE_REPORT_EVERY = 60.0
_REPORTS_KEPT = 10_000  # throttle reports remembered at most (older ones are forgotten first)

INVALID_LOGIN = "invalid user name or password"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_SOURCE = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")
_LOCK_STRIPES = 64

# The most common passwords of at least 8 characters (shorter ones are refused by length anyway), compared
# case-insensitively. A short list on purpose: it stops the guesses an attacker tries first.
COMMON_PASSWORDS = frozenset(
    """
    password password1 password12 password123 password1234 passw0rd p@ssw0rd p@ssword passwort motdepasse
    12345678 123456789 1234567890 12345678910 0123456789 87654321 987654321 11111111 00000000 88888888
    12341234 12121212 11223344 123123123 147258369 159753456 123456abc abc12345 abcd1234 1234abcd
    qwertyui qwertyuiop qwerty12 qwerty123 qwerty1234 1q2w3e4r 1q2w3e4r5t 1qaz2wsx zaq12wsx qazwsxedc
    asdfghjkl asdfasdf zxcvbnm1 iloveyou iloveyou1 sunshine princess football baseball basketball
    superman starwars welcome1 welcome123 letmein1 letmein123 trustno1 whatever computer internet
    jennifer michelle jordan23 master123 dragon123 monkey123 shadow123 football1 charlie1 liverpool
    chelsea1 arsenal1 changeme changeme1 administrator admin123 admin1234 secret123 default1 guest123
    access14 mustang1 pokemon1 samsung1 freedom1 lovely123 1qazxsw2 aa123456 a1234567 q1w2e3r4
    """.split()  # noqa: SIM905 - a word list reads best as words
)


# -- records ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class User:
    name: str
    role: str
    disabled: bool
    created_by: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Claims:
    """The verified claims of an access token."""

    sub: str
    role: str
    iss: str
    aud: str
    typ: str
    iat: int
    exp: int
    jti: str
    pwv: int

    @property
    def name(self) -> str:
        return self.sub

    @property
    def issued_at(self) -> datetime:
        return to_datetime(to_us(self.iat))

    @property
    def expires_at(self) -> datetime:
        return to_datetime(to_us(self.exp))

    def as_dict(self) -> dict[str, Any]:
        return {
            "sub": self.sub,
            "role": self.role,
            "iss": self.iss,
            "aud": self.aud,
            "typ": self.typ,
            "iat": self.iat,
            "exp": self.exp,
            "jti": self.jti,
            "pwv": self.pwv,
        }


@dataclass(frozen=True)
class Session:
    """What a successful login returns: the signed token (kept out of repr) and its claims."""

    token: str = field(repr=False)
    claims: Claims

    @property
    def name(self) -> str:
        return self.claims.sub

    @property
    def role(self) -> str:
        return self.claims.role

    @property
    def expires_at(self) -> datetime:
        return self.claims.expires_at


def password_problem(password: str, name: str | None = None) -> str | None:
    """Why ``password`` is not acceptable as a new password (None when it is)."""
    if not isinstance(password, str):
        return "a password is a string"
    password = _normalise(password)
    if len(password) < MIN_PASSWORD:
        return f"a password needs at least {MIN_PASSWORD} characters (this one has {len(password)})"
    if len(password) > MAX_PASSWORD:
        return f"a password has at most {MAX_PASSWORD} characters (this one has {len(password)})"
    if name is not None and password.casefold() == _normalise(name).casefold():
        return "a password must not be the user name"
    if len(set(password)) == 1:
        return "a password must not be one character repeated"
    if password.casefold() in COMMON_PASSWORDS:
        return "this password is one of the most common ones; choose another"
    return None


def _normalise(text: str) -> str:
    # NFKC: the same password typed on two keyboards (composed or decomposed accents) must hash the same.
    return unicodedata.normalize("NFKC", text)


# -- the engine ------------------------------------------------------------------------------------------------
class Auth:
    """Users, passwords, throttled logins and access tokens of one workspace (``ws.auth``)."""

    def __init__(self, ws: Workspace, *, governance: Governance) -> None:
        self._ws = ws
        self._governance = governance
        self.hasher = PasswordHasher(
            time_cost=ARGON2_TIME_COST,
            memory_cost=ARGON2_MEMORY_KIB,
            parallelism=ARGON2_PARALLELISM,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self.token_ttl = DEFAULT_TTL
        self._dummy: tuple[PasswordHasher, str] | None = None
        self._stored_secret: bytes | None = None
        self._manage = threading.RLock()
        self._stripes = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        # (rule, name, source) -> (when its last auth.login_throttled event was written, refusals since)
        self._throttle_reports: dict[tuple[str, str, str], tuple[float, int]] = {}
        self._reports_lock = threading.Lock()
        ws.projections.register("auth", "auth.*", _apply, tables=["users", "revoked_tokens", "auth_logins"])
        if not ws.read_only and settings.from_env(settings.JWT_SECRET) is None:
            self._workspace_secret()

    def seed_defaults(self) -> None:
        """Nothing to seed: a workspace starts without users (the first admin is made by the operator)."""

    # -- users ---------------------------------------------------------------------------------------------
    def register(self, name: str, password: str, *, role: str, by: str) -> User:
        """Create a user. ``by`` must be an admin or a service actor; the first user must be an admin."""
        _check_name(name)
        _check_role(role)
        self._writable()
        with self._manage:
            first = self._count("SELECT count(*) FROM users") == 0
            self._authorize(by, "auth.user.create", name, "create users")
            if first and role != "admin":
                raise AuthError(f"the first user of a workspace must be an admin, not a {role}")
            if self._count("SELECT count(*) FROM users WHERE lower(name) = lower(?)", [name]):
                raise AuthError(f"a user named {name!r} exists already")
            problem = password_problem(password, name)
            if problem:
                raise WeakPasswordError(problem)
            self._store_hash(name, self.hasher.hash(_normalise(password)))
            try:
                self._ws.publish(
                    "auth.user_registered", {"name": name, "role": role}, actor=by, resource=f"user:{name}"
                )
            except BaseException:
                self._delete_hash(name)
                raise
        return self.user(name)

    def set_role(self, name: str, role: str, *, by: str) -> User:
        """Change a user's role (admins and service actors only). Tokens issued under the old role stop working."""
        _check_role(role)
        self._writable()
        with self._manage:
            self._authorize(by, "auth.user.role", name, "change roles")
            user = self.user(name)
            if user.role == role:
                return user
            if user.role == "admin" and not user.disabled and self._other_admins(name) == 0:
                raise AuthError(f"{name} is the last admin; make another admin first")
            self._ws.publish(
                "auth.role_changed",
                {"name": name, "from": user.role, "to": role},
                actor=by,
                resource=f"user:{name}",
            )
        return self.user(name)

    def disable(self, name: str, *, by: str, reason: str = "") -> User:
        """Disable a user: no more logins, and their tokens are refused. Undo with ``enable``."""
        self._writable()
        with self._manage:
            self._authorize(by, "auth.user.disable", name, "disable users")
            user = self.user(name)
            if user.disabled:
                return user
            if user.role == "admin" and self._other_admins(name) == 0:
                raise AuthError(f"{name} is the last admin; make another admin first")
            self._ws.publish(
                "auth.user_disabled", {"name": name, "reason": reason}, actor=by, resource=f"user:{name}"
            )
        return self.user(name)

    def enable(self, name: str, *, by: str) -> User:
        """Enable a disabled user again."""
        self._writable()
        with self._manage:
            self._authorize(by, "auth.user.enable", name, "enable users")
            user = self.user(name)
            if not user.disabled:
                return user
            self._ws.publish("auth.user_enabled", {"name": name}, actor=by, resource=f"user:{name}")
        return self.user(name)

    def change_password(self, name: str, old: str, new: str, *, source: str = "local") -> None:
        """A user changes their own password; the old one must be right (throttled like a login).

        Every token issued before the change is refused afterwards.
        """
        self._writable()
        _check_source(source)
        with self._attempts(name):
            self._authenticate(name, old, source, purpose="change_password")
            self._replace_password(name, new, by=name, reset=False)

    def set_password(self, name: str, new: str, *, by: str) -> None:
        """Set a user's password without the old one (admins and service actors: a reset, or after a replay)."""
        self._writable()
        self._authorize(by, "auth.user.password", name, "reset passwords")
        self.user(name)
        with self._attempts(name):
            self._replace_password(name, new, by=by, reset=True)

    def user(self, name: str) -> User:
        row = (
            self._reader()
            .execute(
                "SELECT name, role, disabled, created_by, created_at, updated_at FROM users WHERE name = ?",
                [name],
            )
            .fetchone()
        )
        if row is None:
            raise AuthError(f"no user named {name!r}")
        return User(str(row[0]), str(row[1]), bool(row[2]), str(row[3]), row[4], row[5])

    def users(self) -> pd.DataFrame:
        """Every user (no password material): name, role, disabled, created_by, created_at, updated_at,
        has_password (False after a replay, until a password is set)."""
        return self._ws.sql(
            "SELECT u.name, u.role, u.disabled, u.created_by, u.created_at, u.updated_at, "
            "c.name IS NOT NULL AS has_password "
            "FROM users u LEFT JOIN credentials c ON c.name = u.name ORDER BY u.created_at, u.name"
        )

    def active_admins(self) -> list[str]:
        """The names of the enabled admins, in name order."""
        return active_admins(self._ws.ledger)

    def role_of(self, actor: str) -> str | None:
        """``system`` for a service actor, the role of a registered enabled user, else None."""
        return lookup_role(self._ws.ledger, actor)

    # -- logins --------------------------------------------------------------------------------------------
    def login(self, name: str, password: str, *, source: str = "local", ttl: float | None = None) -> Session:
        """Check a password and return a session holding a signed access token.

        Raises ThrottledError (with ``retry_after``) when the attempt is throttled, and AuthError with the
        same message whatever was wrong (unknown user, wrong password, disabled account).
        """
        self._writable()
        _check_source(source)
        ttl = self.token_ttl if ttl is None else ttl
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TTL:
            raise AuthError(f"a token lives from 1 s to {int(MAX_TTL)} s, not {ttl!r}")
        with self._attempts(name):
            pwv = self._authenticate(name, password, source, purpose="login")
            role = self.role_of(name)
            if role is None:  # disabled between the password check and now
                raise AuthError(INVALID_LOGIN)
            now = self._ws.clock.time()
            iat = int(now)
            payload = {
                "iss": self._ws.origin,
                "aud": AUDIENCE,
                "sub": name,
                "role": role,
                "typ": TOKEN_TYPE,
                "iat": iat,
                "exp": iat + int(ttl),
                "jti": self._ws.mesh.new_id(),
                "pwv": pwv,
            }
            token = jwt.encode(payload, self._secret(), algorithm=ALGORITHM)
            self._ws.publish(
                "auth.login_succeeded",
                {"name": name, "source": source, "jti": payload["jti"], "exp": payload["exp"]},
                actor=name,
                resource=f"user:{name}",
            )
        return Session(token, _claims(payload))

    def logout(self, token: str) -> bool:
        """Revoke a token (an ``auth.logout`` event). False when it was revoked already or has expired."""
        self._writable()
        claims = self._decode(token)
        if claims.exp <= self._ws.clock.time() or self._revoked(claims.jti):
            return False
        self._ws.publish(
            "auth.logout",
            {"name": claims.sub, "jti": claims.jti, "exp": claims.exp},
            actor=claims.sub,
            resource=f"user:{claims.sub}",
        )
        return True

    def verify_token(self, token: str) -> Claims:
        """The claims of a valid token; TokenError for anything else (see the module docstring)."""
        claims = self._decode(token)
        now = self._ws.clock.time()
        # PyJWT compares exp/iat with the wall clock; they are checked here against the workspace clock.
        if now >= claims.exp:
            raise TokenError(f"the token expired at {claims.expires_at.isoformat()}")
        if claims.iat > now:
            raise TokenError("the token is issued in the future")
        if claims.exp <= claims.iat or claims.exp - claims.iat > MAX_TTL:
            raise TokenError("the token's lifetime is not acceptable")
        if self._revoked(claims.jti):
            raise TokenError("the token was logged out")
        row = (
            self._reader()
            .execute("SELECT role, disabled, password_version FROM users WHERE name = ?", [claims.sub])
            .fetchone()
        )
        if row is None:
            raise TokenError(f"the token's user {claims.sub!r} does not exist")
        if row[1]:
            raise TokenError(f"user {claims.sub!r} is disabled")
        if row[0] != claims.role:
            raise TokenError(f"the role of {claims.sub!r} changed since the token was issued; log in again")
        if int(row[2]) != claims.pwv:
            raise TokenError(
                f"the password of {claims.sub!r} changed since the token was issued; log in again"
            )
        return claims

    # -- internals: authentication and throttling ------------------------------------------------------------
    @contextlib.contextmanager
    def _attempts(self, name: str) -> Iterator[None]:
        # One attempt at a time per account (striped locks): parallel guesses cannot pass the throttle together.
        key = name if isinstance(name, str) else repr(name)
        lock = self._stripes[zlib.crc32(key.encode("utf-8", "replace")) % _LOCK_STRIPES]
        with lock:
            yield

    def _authenticate(self, name: str, password: str, source: str, *, purpose: str) -> int:
        """Check a password under the throttle; returns the user's password version or raises."""
        key = _attempt_name(name)
        actor = key or "auth"
        now = self._ws.clock.time()
        refusal = self._throttle(key, source, now)
        if refusal is not None:
            rule, retry_after = refusal
            attempts = self._throttle_report(rule, key, source, now)
            if attempts:
                self._ws.publish(
                    "auth.login_throttled",
                    {
                        "name": key,
                        "source": source,
                        "rule": rule,
                        "retry_after": round(retry_after, 3),
                        "purpose": purpose,
                        "attempts": attempts,
                    },
                    actor=actor,
                )
            raise ThrottledError(
                f"too many failed logins; try again in {_seconds(retry_after)}", retry_after=retry_after
            )
        reason = self._check_password(name, password)
        if reason is not None:
            self._ws.publish(
                "auth.login_failed",
                {"name": key, "source": source, "reason": reason, "purpose": purpose},
                actor=actor,
            )
            raise AuthError(INVALID_LOGIN)
        row = self._reader().execute("SELECT password_version FROM users WHERE name = ?", [name]).fetchone()
        assert row is not None
        return int(row[0])

    def _throttle_report(self, rule: str, name: str, source: str, now: float) -> int:
        """How many refused attempts the ``auth.login_throttled`` event written now reports, or 0 when none is
        due (one was written for the same rule and key less than ``THROTTLE_REPORT_EVERY`` seconds ago)."""
        key = (rule, "" if rule == "source" else name, "" if rule == "account" else source)
        with self._reports_lock:
            last, pending = self._throttle_reports.pop(key, (None, 0))
            if last is not None and now - last < THROTTLE_REPORT_EVERY:
                self._throttle_reports[key] = (last, pending + 1)
                return 0
            self._throttle_reports[key] = (now, 0)
            while len(self._throttle_reports) > _REPORTS_KEPT:  # oldest first (insertion order)
                del self._throttle_reports[next(iter(self._throttle_reports))]
            return pending + 1

    def _check_password(self, name: str, password: str) -> str | None:
        """None when right; else the internal reason. Costs one argon2 verification in every case."""
        ok_input = isinstance(password, str) and 0 < len(password) <= 4 * MAX_PASSWORD
        user = None
        if isinstance(name, str) and _NAME.match(name):
            user = (
                self._reader()
                .execute(
                    "SELECT u.disabled, c.hash FROM users u LEFT JOIN credentials c ON c.name = u.name "
                    "WHERE u.name = ?",
                    [name],
                )
                .fetchone()
            )
        if user is None or user[1] is None or not ok_input:
            self._dummy_verify()
            if user is None:
                return "unknown_user"
            return "no_password" if user[1] is None else "bad_password"
        disabled, stored = bool(user[0]), str(user[1])
        candidate = _normalise(password)
        try:
            self.hasher.verify(stored, candidate)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return "bad_password"
        if disabled:  # checked after the hash, so a disabled account answers as slowly as any other
            return "disabled"
        if self.hasher.check_needs_rehash(stored):
            self._store_hash(name, self.hasher.hash(candidate))
        return None

    def _dummy_verify(self) -> None:
        # Verify against a hash of the current parameters so an unknown name takes as long as a wrong password.
        if self._dummy is None or self._dummy[0] is not self.hasher:
            self._dummy = (self.hasher, self.hasher.hash(secrets.token_urlsafe(16)))
        with contextlib.suppress(VerificationError, InvalidHashError):
            self.hasher.verify(self._dummy[1], "not the password")

    def _throttle(self, name: str, source: str, now: float) -> tuple[str, float] | None:
        """(rule, seconds to wait) when the attempt must be refused, else None."""
        horizon = max(PAIR_WINDOW, SOURCE_WINDOW, ACCOUNT_WINDOW)
        rows = (
            self._reader()
            .execute(
                "SELECT epoch_us(ts), name, source, outcome FROM auth_logins "
                f"WHERE ts > {TS} AND outcome IN ('failed', 'succeeded') "
                "AND (name = ? OR source = ?) ORDER BY seq",
                [to_us(now - horizon), name, source],
            )
            .fetchall()
        )
        refusals: list[tuple[str, float]] = []
        # 1. the (account, source) pair: exponential backoff after PAIR_FREE_FAILURES recent failures
        pair: list[float] = []
        for ts_us, n, s, outcome in rows:
            if n == name and s == source and from_us(ts_us) > now - PAIR_WINDOW:
                if outcome == "succeeded":
                    pair.clear()
                else:
                    pair.append(from_us(ts_us))
        if len(pair) >= PAIR_FREE_FAILURES:
            delay = min(PAIR_BASE_DELAY * 2 ** (len(pair) - PAIR_FREE_FAILURES), PAIR_MAX_DELAY)
            if pair[-1] + delay > now:
                refusals.append(("account_source", pair[-1] + delay - now))
        trusted = self._count(
            "SELECT count(*) FROM auth_logins WHERE name = ? AND source = ? AND outcome = 'succeeded' "
            f"AND ts > {TS}",
            [name, source, to_us(now - TRUSTED_FOR)],
        )
        if not trusted:
            # 2. the source over all accounts, 3. the account over all sources: sliding hard caps
            by_source = sorted(
                from_us(ts)
                for ts, _, s, o in rows
                if o == "failed" and s == source and from_us(ts) > now - SOURCE_WINDOW
            )
            if len(by_source) >= SOURCE_LIMIT:
                refusals.append(("source", by_source[len(by_source) - SOURCE_LIMIT] + SOURCE_WINDOW - now))
            by_account = sorted(
                from_us(ts)
                for ts, n, _, o in rows
                if o == "failed" and n == name and from_us(ts) > now - ACCOUNT_WINDOW
            )
            if len(by_account) >= ACCOUNT_LIMIT:
                refusals.append(
                    ("account", by_account[len(by_account) - ACCOUNT_LIMIT] + ACCOUNT_WINDOW - now)
                )
        if not refusals:
            return None
        return max(refusals, key=lambda r: r[1])

    # -- internals: passwords, tokens, storage -------------------------------------------------------------
    def _replace_password(self, name: str, new: str, *, by: str, reset: bool) -> None:
        problem = password_problem(new, name)
        if problem:
            raise WeakPasswordError(problem)
        self._store_hash(name, self.hasher.hash(_normalise(new)))
        self._ws.publish(
            "auth.password_changed", {"name": name, "reset": reset}, actor=by, resource=f"user:{name}"
        )

    def _store_hash(self, name: str, hashed: str) -> None:
        self._ws.con.cursor().execute(
            f"INSERT INTO credentials VALUES (?, ?, {TS}) "
            "ON CONFLICT (name) DO UPDATE SET hash = excluded.hash, updated_at = excluded.updated_at",
            [name, hashed, to_us(self._ws.clock.time())],
        )

    def _delete_hash(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self._ws.con.cursor().execute("DELETE FROM credentials WHERE name = ?", [name])

    def _decode(self, token: str) -> Claims:
        """Signature, algorithm, issuer, audience, required claims and type; not time (see verify_token)."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise TokenError("not a token")
        try:
            payload = jwt.decode(
                token.strip(),
                self._secret(),
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=self._ws.origin,
                leeway=0,
                options={
                    "require": REQUIRED_CLAIMS,
                    "verify_signature": True,
                    "verify_aud": True,
                    "verify_iss": True,
                    # Time claims are checked against the workspace clock by verify_token.
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "strict_aud": True,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.InvalidAlgorithmError as exc:
            raise TokenError(f"the token's algorithm is not accepted (only {ALGORITHM})") from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenError("the token's signature does not verify (forged or altered)") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenError(f"the token is not for {AUDIENCE}") from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenError("the token was issued by another workspace") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"the token lacks the {exc.claim!r} claim") from exc
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"malformed token: {exc}") from exc
        if payload.get("typ") != TOKEN_TYPE:
            raise TokenError(f"the token is of type {payload.get('typ')!r}, not an {TOKEN_TYPE} token")
        try:
            return _claims(payload)
        except TokenError as exc:
            raise TokenError(f"malformed token claims: {exc}") from exc

    def _revoked(self, jti: str) -> bool:
        return bool(self._count("SELECT count(*) FROM revoked_tokens WHERE jti = ?", [jti]))

    def _secret(self) -> bytes:
        env = settings.from_env(settings.JWT_SECRET)
        if env is not None:
            key = env.encode("utf-8")
            if len(key) < MIN_SECRET_BYTES:
                raise AuthError(
                    f"{SECRET_ENV} is {len(key)} bytes; it needs at least {MIN_SECRET_BYTES} random bytes "
                    "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))')"
                )
            return key
        return self._workspace_secret()

    def _workspace_secret(self) -> bytes:
        if self._stored_secret is None:
            if self._ws.read_only and SECRET_NAME not in self._ws.secrets:
                raise TokenError(
                    "this read-only snapshot holds no token secret (secrets are never copied); "
                    f"verify tokens where they were issued, or set {SECRET_ENV}"
                )
            key = self._ws.secrets.generate(SECRET_NAME, nbytes=64)
            if len(key) < MIN_SECRET_BYTES:
                raise AuthError(f"the workspace's token secret is shorter than {MIN_SECRET_BYTES} bytes")
            self._stored_secret = key
        return self._stored_secret

    # -- internals: authorisation and queries ------------------------------------------------------------------
    def _authorize(self, by: str, action: str, name: str, what: str) -> None:
        # Who manages users is policy (the default pack: admins and the system), decided and recorded.
        self._governance.check(by, action, f"user:{name}", what=what)

    def _other_admins(self, name: str) -> int:
        return self._count(
            "SELECT count(*) FROM users WHERE role = 'admin' AND NOT disabled AND name <> ?", [name]
        )

    def _writable(self) -> None:
        if self._ws.read_only:
            raise ReadOnlyError("a read-only snapshot cannot change users or log anyone in")

    def _reader(self) -> Any:
        return self._ws.ledger.reader()

    def _count(self, sql: str, params: list[Any] | None = None) -> int:
        row = self._reader().execute(sql, params or []).fetchone()
        return int(row[0]) if row else 0


# -- helpers ---------------------------------------------------------------------------------------------------
def active_admins(ledger: Ledger) -> list[str]:
    """The names of the enabled admins, in name order, straight from the ``users`` table (like
    ``lookup_role``, for governance, which is built before Auth)."""
    rows = (
        ledger.reader()
        .execute("SELECT name FROM users WHERE role = 'admin' AND NOT disabled ORDER BY name")
        .fetchall()
    )
    return [str(r[0]) for r in rows]


def lookup_role(ledger: Ledger, actor: str) -> str | None:
    """``Auth.role_of`` straight from the ``users`` table: governance is given this, so it needs no Auth engine
    (and Auth, whose user management governance decides, can be built after governance)."""
    if actor in SERVICE_ACTORS:
        return "system"
    if not isinstance(actor, str):
        return None
    row = ledger.reader().execute("SELECT role, disabled FROM users WHERE name = ?", [actor]).fetchone()
    if row is None or row[1]:
        return None
    return str(row[0])


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise AuthError(
            f"bad user name {name!r}: 1 to 64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
        )
    if name.lower() in RESERVED_NAMES:
        raise AuthError(f"{name!r} is reserved for the system; choose another user name")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise AuthError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")


def _check_source(source: str) -> None:
    if not isinstance(source, str) or not _SOURCE.match(source):
        raise AuthError(f"bad login source {source!r}: 1 to 200 characters, no control characters")


def _attempt_name(name: object) -> str:
    """The name an attempt is recorded under: the name tried, cut short and without control characters."""
    if not isinstance(name, str):
        return ""
    return re.sub(r"[\x00-\x1f\x7f]", "?", name[:200])


def _claims(payload: dict[str, Any]) -> Claims:
    def text(key: str) -> str:
        value = payload[key]
        if not isinstance(value, str):
            raise TokenError(f"claim {key} is not a string")
        return value

    def number(key: str) -> int:
        value = payload[key]
        if not isinstance(value, int) or isinstance(value, bool):
            raise TokenError(f"claim {key} is not an integer")
        return value

    return Claims(
        sub=text("sub"),
        role=text("role"),
        iss=text("iss"),
        aud=text("aud"),
        typ=text("typ"),
        iat=number("iat"),
        exp=number("exp"),
        jti=text("jti"),
        pwv=number("pwv"),
    )


def _seconds(value: float) -> str:
    total = max(1, int(-(-value // 1)))  # round up: waiting less than asked would be throttled again
    minutes, seconds = divmod(total, 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def _apply(con: Any, events: list[Event]) -> None:
    for e in events:
        p = e.payload
        topic = e.topic
        if topic == "auth.user_registered":
            con.execute(
                f"INSERT INTO users VALUES (?, ?, false, 0, ?, {TS}, {TS}, ?)",
                [p["name"], p["role"], e.actor, e.ts_us, e.ts_us, e.id],
            )
        elif topic == "auth.role_changed":
            con.execute(
                f"UPDATE users SET role = ?, updated_at = {TS} WHERE name = ?",
                [p["to"], e.ts_us, p["name"]],
            )
        elif topic in ("auth.user_disabled", "auth.user_enabled"):
            con.execute(
                f"UPDATE users SET disabled = ?, updated_at = {TS} WHERE name = ?",
                [topic == "auth.user_disabled", e.ts_us, p["name"]],
            )
        elif topic == "auth.password_changed":
            con.execute(
                f"UPDATE users SET password_version = password_version + 1, updated_at = {TS} WHERE name = ?",
                [e.ts_us, p["name"]],
            )
        elif topic == "auth.logout":
            con.execute(
                f"INSERT INTO revoked_tokens VALUES (?, ?, {TS}, {TS}, ?)",
                [p["jti"], p["name"], to_us(int(p["exp"])), e.ts_us, e.id],
            )
        elif topic in _LOGIN_OUTCOMES:
            con.execute(
                f"INSERT INTO auth_logins VALUES ({TS}, ?, ?, ?, ?, ?, ?)",
                [
                    e.ts_us,
                    e.seq,
                    p["name"],
                    p["source"],
                    _LOGIN_OUTCOMES[topic],
                    p.get("reason") or p.get("rule"),
                    e.id,
                ],
            )


_LOGIN_OUTCOMES = {
    "auth.login_succeeded": "succeeded",
    "auth.login_failed": "failed",
    "auth.login_throttled": "throttled",
}
