"""The named Python AST checks a rule can reference (``ast: call:eval_of_input``); no code lives in YAML.

Each check takes a parsed module and yields the offending nodes; the scanner turns their source positions
into findings. Checks resolve import aliases (``import subprocess as sp; sp.run(..., shell=True)``,
``from os import system``), so renaming a module does not hide a call.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator

__all__ = ["CHECKS", "AstCheck", "describe"]

AstCheck = Callable[[ast.Module], Iterator[ast.AST]]
CHECKS: dict[str, AstCheck] = {}
_DOCS: dict[str, str] = {}


def _check(name: str) -> Callable[[AstCheck], AstCheck]:
    def register(func: AstCheck) -> AstCheck:
        CHECKS[name] = func
        _DOCS[name] = " ".join((func.__doc__ or "").split())
        return func

    return register


def describe() -> dict[str, str]:
    """Every check's name and what it looks for."""
    return dict(_DOCS)


# -- name resolution -------------------------------------------------------------------------------------------
def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> dotted origin, from every import in the module (``sp`` -> ``subprocess``)."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    if isinstance(node, ast.Call):  # Path("/x").read_text -> Path().read_text
        inner = _dotted(node.func)
        if inner is not None:
            parts.append(inner + "()")
            return ".".join(reversed(parts))
    return None


def _calls(tree: ast.Module) -> Iterator[tuple[ast.Call, str]]:
    """Every call with its resolved dotted name (``sp.run`` -> ``subprocess.run``)."""
    aliases = _aliases(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name is None:
                continue
            head, _, rest = name.partition(".")
            origin = aliases.get(head)
            if origin is not None:
                name = origin + ("." + rest if rest else "")
            yield node, name


def _truthy_constant(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and bool(node.value) and not isinstance(node.value, str | bytes)


def _strings_in(node: ast.AST) -> list[str]:
    """String constants inside an expression, in source order (``Path.home() / ".aws" / "credentials"``)."""
    found = [n for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    found.sort(key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)))
    return [str(n.value) for n in found]


# -- the checks ----------------------------------------------------------------------------------------------
_SHELL_CALLS = {
    "os.system",
    "os.popen",
    "subprocess.getoutput",
    "subprocess.getstatusoutput",
    "commands.getoutput",
    "commands.getstatusoutput",
    "platform.popen",
    "pty.spawn",
    "asyncio.create_subprocess_shell",
}


@_check("call:os_system")
def os_system(tree: ast.Module) -> Iterator[ast.AST]:
    """Calls that hand a command line to a shell: os.system, os.popen, subprocess.getoutput and the like."""
    for node, name in _calls(tree):
        if name in _SHELL_CALLS:
            yield node


_SUBPROCESS = {
    "subprocess.run",
    "subprocess.call",
    "subprocess.check_call",
    "subprocess.check_output",
    "subprocess.Popen",
}


@_check("call:subprocess_shell_true")
def subprocess_shell_true(tree: ast.Module) -> Iterator[ast.AST]:
    """subprocess.run/call/check_call/check_output/Popen with shell=True (a truthy constant)."""
    for node, name in _calls(tree):
        if name in _SUBPROCESS and any(k.arg == "shell" and _truthy_constant(k.value) for k in node.keywords):
            yield node


@_check("call:eval_of_input")
def eval_of_input(tree: ast.Module) -> Iterator[ast.AST]:
    """eval() or exec() of anything but a string literal (input, a variable, a request field...)."""
    for node, name in _calls(tree):
        if name in ("eval", "exec", "builtins.eval", "builtins.exec") and node.args:
            arg = node.args[0]
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str | bytes)):
                yield node


_ROOTS = {
    "/",
    "/*",
    "~",
    "~/",
    "~/*",
    "/home",
    "/root",
    "/etc",
    "/usr",
    "/var",
    "/bin",
    "/boot",
    "/lib",
    "/opt",
    "/srv",
    "c:\\",
    "c:/",
    "c:\\*",
}
_DELETE = {"shutil.rmtree", "os.rmdir", "os.removedirs", "os.remove", "os.unlink"}


def _is_root_path(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        value = node.value.strip().lower()
        return value in _ROOTS or (len(value) > 1 and value.rstrip("/") in _ROOTS)
    if isinstance(node, ast.Call):
        name = _dotted(node.func) or ""
        if name.endswith("Path.home"):
            return True
        if name.endswith(("expanduser", "Path", "abspath", "realpath", "normpath")) and node.args:
            return _is_root_path(node.args[0])
    return isinstance(node, ast.Attribute) and node.attr == "sep"  # os.sep is "/"


@_check("call:rmtree_root")
def rmtree_root(tree: ast.Module) -> Iterator[ast.AST]:
    """shutil.rmtree / os.rmdir / os.removedirs of the file-system root, the home directory or a system directory."""
    for node, name in _calls(tree):
        if name in _DELETE and node.args and _is_root_path(node.args[0]):
            yield node
        elif name.endswith(").rmdir") or name.endswith(").unlink"):
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Call)
                and _is_root_path(func.value)
            ):
                yield node


@_check("loop:os_fork")
def os_fork_loop(tree: ast.Module) -> Iterator[ast.AST]:
    """os.fork() inside an endless loop (``while True`` / ``while 1``): a fork bomb."""
    aliases = _aliases(tree)
    seen: set[int] = set()
    for loop in ast.walk(tree):
        if isinstance(loop, ast.While) and _truthy_constant(loop.test):
            for node in ast.walk(loop):
                if isinstance(node, ast.Call) and id(node) not in seen:
                    name = _dotted(node.func) or ""
                    head, _, rest = name.partition(".")
                    if head in aliases:
                        name = aliases[head] + ("." + rest if rest else "")
                    if name in ("os.fork", "os.forkpty"):
                        seen.add(id(node))
                        yield node


_SPAWN = ("subprocess.", "pty.spawn", "os.exec", "os.system", "os.popen", "os.spawn")


@_check("module:python_reverse_shell")
def python_reverse_shell(tree: ast.Module) -> Iterator[ast.AST]:
    """A socket that connects out, os.dup2 of its descriptor onto stdin/stdout, and a shell spawned: a reverse shell.

    Each os.dup2 call of such a module is a finding.
    """
    calls = list(_calls(tree))
    connects = any(n.endswith(".connect") or n == "socket.create_connection" for _, n in calls)
    spawns = any(n.startswith(_SPAWN) for _, n in calls)
    if connects and spawns:
        for node, name in calls:
            if name == "os.dup2":
                yield node


_CREDENTIAL_PATH = re.compile(
    r"(?:^|/)\.aws/credentials$|^/etc/shadow$|^/etc/gshadow$|(?:^|/)\.ssh/id_(?:rsa|dsa|ecdsa|ed25519)$"
    r"|(?:^|/)\.git-credentials$|(?:^|/)\.netrc$|(?:^|/)\.pgpass$|(?:^|/)\.docker/config\.json$"
    r"|(?:^|/)\.kube/config$"
)
_READERS = (
    "open",
    "io.open",
    "os.open",
    "codecs.open",
    "builtins.open",
    "shutil.copy",
    "shutil.copyfile",
    "shutil.copy2",
)


@_check("call:reads_credential_file")
def reads_credential_file(tree: ast.Module) -> Iterator[ast.AST]:
    """open(), Path(...).read_text() or shutil.copy of a credential file.

    Credential files: ~/.aws/credentials, /etc/shadow, ~/.ssh/id_rsa (and the other key types), .git-credentials,
    .netrc, .pgpass, ~/.docker/config.json, ~/.kube/config.
    """
    for node, name in _calls(tree):
        if name in _READERS and node.args and _credential_path(_strings_in(node.args[0])):
            yield node
    for found in ast.walk(tree):
        # Path(...).read_text() and (Path.home() / ".ssh" / "id_rsa").read_bytes(): the path is the receiver.
        func = found.func if isinstance(found, ast.Call) else None
        readers = ("read_text", "read_bytes", "open")
        if (
            isinstance(func, ast.Attribute)
            and func.attr in readers
            and _credential_path(_strings_in(func.value))
        ):
            yield node


def _credential_path(parts: list[str]) -> bool:
    path = "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts))
    return bool(path) and _CREDENTIAL_PATH.search(path.replace("\\", "/")) is not None
