"""A seeded, labelled corpus of code, configuration, logs and prose with planted fake secrets.

The benchmark measures throughput and recall on it against detect-secrets, and the tests plant secrets with
it. Nothing is stored: the same ``seed`` and size give the same text. Secrets are random but format-valid
(right prefix, length and alphabet), and each planted one is recorded with its exact offsets.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["KINDS", "Corpus", "Planted", "make_corpus", "make_secret"]

_ALNUM = string.ascii_letters + string.digits
_UPPER_DIGITS = string.ascii_uppercase + string.digits
_B64 = string.ascii_letters + string.digits + "+/"
_URLSAFE = string.ascii_letters + string.digits + "-_"


@dataclass(frozen=True)
class Planted:
    """A planted secret: its kind (the rule that should find it) and where its value is in the text."""

    kind: str
    start: int
    end: int
    value: str


@dataclass(frozen=True)
class Corpus:
    text: str
    planted: tuple[Planted, ...]


def _r(rng: random.Random, n: int, alphabet: str = _ALNUM) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _jwt(rng: random.Random) -> str:
    def seg(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode().rstrip("=")

    header = seg({"alg": "HS256", "typ": "JWT"})
    payload = seg(
        {
            "sub": _r(rng, 8, string.digits),
            "name": _r(rng, 6),
            "iat": rng.randint(1_600_000_000, 1_800_000_000),
        }
    )
    return f"{header}.{payload}.{_r(rng, 43, _URLSAFE)}"


def _private_key(rng: random.Random) -> str:
    kind = rng.choice(["RSA ", "EC ", "OPENSSH ", ""])
    body = "\n".join(_r(rng, 64, _B64) for _ in range(rng.randint(3, 8)))
    return f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----"


# kind -> how to make one value (the kind is the id of the rule that should find it)
KINDS: dict[str, Callable[[random.Random], str]] = {
    "aws-access-key-id": lambda rng: rng.choice(["AKIA", "ASIA"]) + _r(rng, 16, _UPPER_DIGITS),
    "aws-secret-access-key": lambda rng: _r(rng, 40, _B64),
    "github-token": lambda rng: rng.choice(["ghp_", "gho_", "ghs_"]) + _r(rng, 36),
    "gitlab-token": lambda rng: "glpat-" + _r(rng, 20, _URLSAFE),
    "slack-token": lambda rng: (
        f"xox{rng.choice('bp')}-{_r(rng, 12, string.digits)}-{_r(rng, 13, string.digits)}-{_r(rng, 24)}"
    ),
    "slack-webhook": lambda rng: (
        f"https://hooks.slack.com/services/T{_r(rng, 8, _UPPER_DIGITS)}/B{_r(rng, 10, _UPPER_DIGITS)}/{_r(rng, 24)}"
    ),
    "stripe-live-key": lambda rng: rng.choice(["sk_live_", "rk_live_"]) + _r(rng, 24),
    "openai-api-key": lambda rng: "sk-" + _r(rng, 20) + "T3BlbkFJ" + _r(rng, 20),
    "azure-storage-key": lambda rng: _r(rng, 86, _B64) + "==",
    "private-key": _private_key,
    "jwt": _jwt,
    "password-in-url": lambda rng: _r(rng, rng.randint(10, 20)),
    "npm-token": lambda rng: "npm_" + _r(rng, 36),
    "pypi-token": lambda rng: "pypi-AgEIcHlwaS5vcmc" + _r(rng, 60, _URLSAFE),
}


def make_secret(kind: str, rng: random.Random) -> str:
    """One random, format-valid value of ``kind`` (the password only, for ``password-in-url``)."""
    return KINDS[kind](rng)


_NAMES = {
    "aws-access-key-id": "AWS_ACCESS_KEY_ID",
    "aws-secret-access-key": "AWS_SECRET_ACCESS_KEY",
    "github-token": "GITHUB_TOKEN",
    "gitlab-token": "GITLAB_TOKEN",
    "slack-token": "SLACK_BOT_TOKEN",
    "slack-webhook": "SLACK_WEBHOOK_URL",
    "stripe-live-key": "STRIPE_SECRET_KEY",
    "openai-api-key": "OPENAI_API_KEY",
    "jwt": "SESSION_TOKEN",
}


def _place(kind: str, value: str, rng: random.Random) -> tuple[str, int]:
    """A line (or lines) holding ``value`` in a typical context, and where the value starts in it."""
    if kind == "password-in-url":
        user = rng.choice(["app", "admin", "deploy", "svc_reports"])
        scheme, host = rng.choice(
            [
                ("postgres", "db.internal:5432/app"),
                ("mysql", "10.0.0.5/prod"),
                ("redis", "cache:6379/0"),
                ("https", "git.example.com/acme/repo.git"),
            ]
        )
        url = f"{scheme}://{user}:{value}@{host}"
        line = rng.choice(["DATABASE_URL={u}", '  url: "{u}"', 'DSN = "{u}"', "# connect with {u}"]).format(
            u=url
        )
        return line, line.index(url) + len(f"{scheme}://{user}:")
    if kind == "private-key":
        if rng.random() < 0.5:
            return value, 0
        escaped = value.replace("\n", "\\n")
        line = f'  "private_key": "{escaped}\\n",'
        return line, line.index(escaped)
    if kind == "azure-storage-key":
        account = f"acct{rng.randint(1, 99)}"
        line = (
            f"AZURE_STORAGE=DefaultEndpointsProtocol=https;AccountName={account};AccountKey={value};"
            "EndpointSuffix=core.windows.net"
        )
        return line, line.index(value)
    if kind == "npm-token":
        line = f"//registry.npmjs.org/:_authToken={value}"
        return line, line.index(value)
    if kind == "pypi-token":
        line = rng.choice(["password = {v}", "TWINE_PASSWORD={v}"]).format(v=value)
        return line, line.index(value)
    if kind == "aws-secret-access-key":
        line = rng.choice(
            ["aws_secret_access_key = {v}", 'AWS_SECRET_ACCESS_KEY="{v}"', '  "SecretAccessKey": "{v}",']
        ).format(v=value)
        return line, line.index(value)
    name = _NAMES.get(kind, "TOKEN")
    line = rng.choice(
        [
            '{n} = "{v}"',
            "export {n}={v}",
            '    "{l}": "{v}",',
            "{l}: {v}",
            'curl -H "Authorization: Bearer {v}" https://api.example.com/v1/items',
            "# rotated {v} last week, see ticket",
        ]
    ).format(n=name, l=name.lower(), v=value)
    return line, line.index(value)


_WORD_TEXT = (
    "the a to of and in is for on with as by it this that from be are or not was at an your we can will "
    "if user data value result config item index count name path file request response client server "
    "cache timeout retry limit offset page size model batch step loss score label text query table "
    "column row field record event handler report build deploy service update select order status error "
    "warning message session account project release version default option system ignore previous key "
    "token"
)
_WORDS = _WORD_TEXT.split()
_IDENT = [
    "user",
    "data",
    "value",
    "result",
    "config",
    "item",
    "count",
    "name",
    "path",
    "client",
    "cache",
    "retry",
    "limit",
    "page",
    "model",
    "batch",
    "score",
    "label",
    "query",
    "row",
    "event",
    "report",
]


def _filler(rng: random.Random) -> str:
    def ident() -> str:
        return "_".join(rng.choices(_IDENT, k=rng.randint(1, 2)))

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choices(_WORDS, k=rng.randint(lo, hi)))

    ind = "    " * rng.randint(0, 3)
    r = rng.random()
    if r < 0.16:
        return f"{ind}{ident()} = {ident()}({ident()}, {rng.randint(0, 100)})"
    if r < 0.28:
        return f'{ind}{ident()} = "{words(1, 5)}"'
    if r < 0.36:
        return f"{ind}# {words(3, 12)}"
    if r < 0.42:
        return f"{ind}if {ident()} > {rng.randint(0, 9)}:"
    if r < 0.47:
        return f"{ind}return {ident()}.{ident()}()"
    if r < 0.52:
        value = rng.choice(["true", "false", str(rng.randint(1, 9999)), "localhost", "/var/lib/app"])
        return f"{ident().upper()}={value}"
    if r < 0.57:
        return f'  "{ident()}": {rng.choice(["null", "true", str(rng.randint(0, 999)), json.dumps(words(1, 3))])},'
    if r < 0.62:
        return (
            f"SELECT id, {ident()} FROM {ident()}s WHERE {ident()} = ? "
            f"{rng.choice(['ORDER BY id', 'LIMIT 50', 'UNION SELECT id, name FROM archive', ''])}"
        )
    if r < 0.67:
        return (
            f"2026-01-{rng.randint(10, 28)}T{rng.randint(10, 23)}:{rng.randint(10, 59)}:00Z "
            f"{rng.choice(['INFO', 'WARN', 'DEBUG'])} GET /api/{ident()}/{rng.randint(1, 999)} "
            f"{rng.choice([200, 201, 404, 500])} {rng.randint(1, 300)}ms"
        )
    if r < 0.72:
        url = f"https://docs.example.com/{ident()}/{rng.randint(1, 99)}?page={rng.randint(1, 9)}"
        return f"See {url} for {words(2, 6)}."
    if r < 0.76:
        return f"{ind}from ..{ident()} import {ident()}  # ../{ident()}/{ident()}.py"
    if r < 0.79:
        return f'{ind}digest = "{rng.getrandbits(160):040x}"'
    if r < 0.91:
        return ""  # about one line in eight is blank, as in source code
    if r < 0.95:
        return words(4, 12).capitalize() + "."
    return f"{ind}def {ident()}(self, {ident()}, {ident()}={rng.randint(0, 9)}):"


def make_corpus(
    size: int, *, seed: int = 0, every: int = 100, kinds: tuple[str, ...] | None = None
) -> Corpus:
    """About ``size`` characters of text with a planted secret about every ``every`` lines (kinds in turn)."""
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    kinds = tuple(kinds or KINDS)
    lines: list[str] = []
    planted: list[Planted] = []
    pos = 0
    turn = 0
    while pos < size:
        if rng.randrange(every) == 0:
            kind = kinds[turn % len(kinds)]
            turn += 1
            value = make_secret(kind, rng)
            line, at = _place(kind, value, rng)
            planted.append(Planted(kind, pos + at, pos + at + len(value), value))
        else:
            line = _filler(rng)
        lines.append(line)
        pos += len(line) + 1
    return Corpus("\n".join(lines) + "\n", tuple(planted))
