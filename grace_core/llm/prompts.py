"""Prompts as data: versioned YAML files, rendered into chat messages by safe placeholder substitution.

A prompt file (``grace_core/prompts/<name>.yaml``) holds one prompt's versions::

    name: reflection.questions
    description: ...
    references: ["Park et al. 2023, Generative Agents ..."]
    versions:
      - version: 1
        inputs:
          observations: {kind: list, item: "{id}. {text}", empty: "(no observations)"}
          count: {kind: text, default: 3}
        system: ...
        user: |
          {observations}
          Given only the information above, what are the {count} most salient ...
        output: {kind: json, schema: {type: object, required: [questions], ...}}
        params: {temperature: 0.0, max_tokens: 256}

Placeholders are ``{name}`` of a declared input and nothing else (no attribute access, no expressions, no code);
``{{`` and ``}}`` are literal braces, and any other brace is an error when the file is loaded. Input kinds:
``text`` (a string or number), ``list`` (strings or mappings, each rendered with the ``item`` template and
joined by newlines; ``empty`` stands in for an empty list) and ``turns`` (earlier conversation turns
``{role: user|assistant, text}``, sent as chat messages between the system and the user message).
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from grace_core.errors import PromptError
from grace_core.events import canonical_json

from .schema import check_schema

__all__ = [
    "MAX_PROMPT_BYTES",
    "InputSpec",
    "Prompt",
    "PromptLibrary",
    "check_params",
    "default_prompts",
]

# The rendered messages go on the ledger in full, and an event's payload is at most 1 MiB.
MAX_PROMPT_BYTES = 512 * 1024
_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")
_NAME = re.compile(r"^[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*$")
_KINDS = ("text", "list", "turns")
_ROLES = ("user", "assistant")
_MISSING: Any = object()


# -- parameters ------------------------------------------------------------------------------------------------
def _number(lo: float, hi: float, *, low_open: bool = False) -> Any:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "a number"
        if value < lo or value > hi or (low_open and value == lo):
            return f"a number in {'(' if low_open else '['}{lo:g}, {hi:g}]"
        return None

    return check


def _integer(lo: int, hi: int) -> Any:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            return f"an integer in [{lo}, {hi}]"
        return None

    return check


def _strings(value: Any) -> str | None:
    ok = isinstance(value, list) and len(value) <= 8 and all(isinstance(s, str) and s for s in value)
    return None if ok else "a list of at most 8 non-empty strings"


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


#: Generation parameters a call may set, each with its check. ``structured`` asks the backend to constrain the
#: answer to the prompt's JSON schema (a llama.cpp grammar, OpenAI-style ``response_format``).
PARAMS: Mapping[str, Any] = {
    "temperature": _number(0.0, 2.0),
    "max_tokens": _integer(1, 32_768),
    "seed": _integer(-(2**31), 2**32 - 1),
    "top_p": _number(0.0, 1.0, low_open=True),
    "stop": _strings,
    "structured": _flag,
}


def check_params(params: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The parameters as a plain dict; raises PromptError naming the first bad one."""
    if not isinstance(params, Mapping):
        raise PromptError(f"{where}: parameters must be a mapping, not {type(params).__name__}")
    for key, value in params.items():
        check = PARAMS.get(key)
        if check is None:
            raise PromptError(f"{where}: unknown parameter {key!r}; known: {', '.join(PARAMS)}")
        problem = check(value)
        if problem:
            raise PromptError(f"{where}: parameter {key} must be {problem}, not {value!r}")
    return dict(params)


# -- templates -------------------------------------------------------------------------------------------------
def _placeholders(template: str, where: str) -> list[str]:
    names = []
    for m in _TOKEN.finditer(template):
        if m.group(1):
            names.append(m.group(1))
        elif m.group(0) in "{}":
            raise PromptError(
                f"{where}: a lone {m.group(0)!r} at character {m.start()}; write {{{{ or }}}} for a literal brace"
            )
    return names


def _substitute(template: str, values: Mapping[str, str]) -> str:
    def replace(m: re.Match[str]) -> str:
        name = m.group(1)
        # "{{" and "}}" are escapes for one literal brace
        return values[name] if name else m.group(0)[0]

    # One pass: a substituted value is never scanned again, so braces inside inputs stay as they are.
    return _TOKEN.sub(replace, template)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, ".6g")
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, Mapping):
        return canonical_json(value)
    return str(value)


@dataclass(frozen=True)
class InputSpec:
    """One named input of a prompt version."""

    name: str
    kind: str = "text"
    item: str = "{text}"
    empty: str = "(none)"
    default: Any = _MISSING
    description: str = ""

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def normalize(self, value: Any, where: str) -> Any:
        """The value as handlers see it: text as given, list items as dicts (a string item is ``{text: s}``)."""
        if self.kind == "text":
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise PromptError(f"{where}: input {self.name} must be text or a number, not {_kind(value)}")
            return value
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise PromptError(f"{where}: input {self.name} must be a list, not {_kind(value)}")
        items: list[dict[str, Any]] = []
        for i, item in enumerate(value):
            if isinstance(item, str) and self.kind == "list":
                items.append({"text": item})
            elif isinstance(item, Mapping):
                items.append({str(k): v for k, v in item.items()})
            else:
                raise PromptError(f"{where}: {self.name}[{i}] must be a mapping, not {_kind(item)}")
            if self.kind == "turns":
                turn = items[-1]
                if turn.get("role") not in _ROLES or not isinstance(turn.get("text"), str):
                    raise PromptError(
                        f"{where}: {self.name}[{i}] must be {{role: user|assistant, text: ...}}, "
                        f"not {_short(turn)}"
                    )
            else:
                missing = [k for k in _placeholders(self.item, where) if k not in items[-1]]
                if missing:
                    raise PromptError(
                        f"{where}: {self.name}[{i}] has no {missing[0]!r} "
                        f"(each item is rendered as {self.item!r})"
                    )
        return items

    def render(self, value: Any) -> str:
        if self.kind == "text":
            return _text(value)
        if not value:
            return self.empty
        return "\n".join(
            _substitute(self.item, {k: _text(v) for k, v in item.items() if isinstance(k, str)})
            for item in value
        )


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- prompts ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prompt:
    """One version of a prompt: what it takes, what it says, what it must answer."""

    name: str
    version: int
    description: str
    system: str
    user: str
    inputs: tuple[InputSpec, ...]
    output: str = "text"  # "text" or "json"
    schema: Mapping[str, Any] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    references: tuple[str, ...] = ()
    source: str = ""

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def normalize(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Inputs with defaults filled in and lists as dicts; raises PromptError for any that do not fit."""
        if not isinstance(inputs, Mapping):
            raise PromptError(f"{self.label}: inputs must be a mapping of names to values")
        specs = {s.name: s for s in self.inputs}
        unknown = sorted(set(inputs) - set(specs))
        if unknown:
            raise PromptError(
                f"{self.label}: unexpected input {unknown[0]!r}; it takes {', '.join(specs) or 'no inputs'}"
            )
        out: dict[str, Any] = {}
        for name, spec in specs.items():
            if name in inputs:
                value = inputs[name]
            elif spec.required:
                raise PromptError(f"{self.label}: input {name!r} is missing; it takes {', '.join(specs)}")
            else:
                value = spec.default
            out[name] = spec.normalize(value, self.label)
        return out

    def render(self, inputs: Mapping[str, Any]) -> list[dict[str, str]]:
        """The chat messages (system, earlier turns, user) for these inputs."""
        return self.messages(self.normalize(inputs))

    def messages(self, values: Mapping[str, Any]) -> list[dict[str, str]]:
        """The chat messages for inputs that ``normalize`` returned."""
        texts = {s.name: s.render(values[s.name]) for s in self.inputs if s.kind != "turns"}
        messages = [{"role": "system", "content": _substitute(self.system, texts).strip()}]
        for spec in self.inputs:
            if spec.kind == "turns":
                messages += [{"role": t["role"], "content": t["text"]} for t in values[spec.name]]
        messages.append({"role": "user", "content": _substitute(self.user, texts).strip()})
        size = len(canonical_json({"messages": messages}, limit=1 << 30).encode())
        if size > MAX_PROMPT_BYTES:
            raise PromptError(
                f"{self.label} renders to {size} bytes, over the {MAX_PROMPT_BYTES} the ledger can record; "
                "pass fewer or shorter inputs"
            )
        return messages


def _spec(name: str, raw: Any, where: str) -> InputSpec:
    if not isinstance(raw, Mapping):
        raise PromptError(f"{where}: input {name} must be a mapping like {{kind: text}}")
    unknown = set(raw) - {"kind", "item", "empty", "default", "description"}
    if unknown:
        raise PromptError(f"{where}: input {name} has unknown key {sorted(unknown)[0]!r}")
    kind = raw.get("kind", "text")
    if kind not in _KINDS:
        raise PromptError(f"{where}: input {name} has kind {kind!r}; use one of {', '.join(_KINDS)}")
    spec = InputSpec(
        name=name,
        kind=kind,
        item=str(raw.get("item", "{text}")),
        empty=str(raw.get("empty", "(none)")),
        default=raw.get("default", _MISSING),
        description=str(raw.get("description", "")),
    )
    _placeholders(spec.item, f"{where}: input {name}'s item")
    if not spec.required:
        spec.normalize(spec.default, f"{where}: input {name}'s default")
    return spec


def _version(name: str, raw: Any, meta: Mapping[str, Any], source: str) -> Prompt:
    if not isinstance(raw, Mapping):
        raise PromptError(f"{source}: each entry of versions must be a mapping")
    version = raw.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PromptError(f"{source}: every version needs `version:` a positive integer, not {version!r}")
    where = f"{source}: {name} v{version}"
    known = {"version", "description", "inputs", "system", "user", "output", "params"}
    unknown = set(raw) - known
    if unknown:
        raise PromptError(f"{where}: unknown key {sorted(unknown)[0]!r}; known: {', '.join(sorted(known))}")
    for key in ("system", "user"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise PromptError(f"{where}: `{key}:` text is missing")
    inputs = raw.get("inputs") or {}
    if not isinstance(inputs, Mapping):
        raise PromptError(f"{where}: inputs must be a mapping of names to specs")
    specs = tuple(_spec(str(n), spec, where) for n, spec in inputs.items())
    used = _placeholders(raw["system"], f"{where}: system") + _placeholders(raw["user"], f"{where}: user")
    declared = {s.name for s in specs if s.kind != "turns"}
    undeclared = sorted(set(used) - declared)
    if undeclared:
        raise PromptError(
            f"{where}: the template uses {{{undeclared[0]}}}, which is not a text or list input"
        )
    unused = sorted(declared - set(used))
    if unused:
        raise PromptError(f"{where}: input {unused[0]!r} is declared but never used in the template")
    if sum(s.kind == "turns" for s in specs) > 1:
        raise PromptError(f"{where}: at most one input of kind turns")
    output = raw.get("output") or {"kind": "text"}
    kind = output.get("kind", "text") if isinstance(output, Mapping) else None
    if kind not in ("text", "json"):
        raise PromptError(f"{where}: output must be {{kind: text}} or {{kind: json, schema: ...}}")
    schema = output.get("schema") if kind == "json" else None
    if kind == "json":
        problems = check_schema(schema) if schema is not None else ["a json output needs a schema"]
        if problems:
            raise PromptError(f"{where}: output schema: {problems[0]}")
    params = check_params(raw.get("params") or {}, where)
    refs = meta.get("references") or []
    return Prompt(
        name=name,
        version=version,
        description=str(raw.get("description") or meta.get("description") or ""),
        system=raw["system"],
        user=raw["user"],
        inputs=specs,
        output=kind,
        schema=schema,
        params=params,
        references=tuple(str(r) for r in refs),
        source=source,
    )


def load_prompt_text(text: str, source: str) -> list[Prompt]:
    """Every version in one prompt file's text."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PromptError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(raw, Mapping):
        raise PromptError(f"{source}: a prompt file is a mapping with name, description and versions")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise PromptError(
            f"{source}: `name:` must be dotted lower-case words (like chat.answer), not {name!r}"
        )
    versions = raw.get("versions")
    if not isinstance(versions, list) or not versions:
        raise PromptError(f"{source}: `versions:` must list at least one version")
    prompts = [_version(name, v, raw, source) for v in versions]
    numbers = [p.version for p in prompts]
    if len(set(numbers)) != len(numbers):
        raise PromptError(f"{source}: {name} lists a version number twice")
    return prompts


class PromptLibrary:
    """Prompts by name and version; the newest version is the default."""

    def __init__(self, prompts: Iterable[Prompt] = ()) -> None:
        self._prompts: dict[str, dict[int, Prompt]] = {}
        for prompt in prompts:
            self._add(prompt)

    def _add(self, prompt: Prompt) -> None:
        versions = self._prompts.setdefault(prompt.name, {})
        if prompt.version in versions:
            raise PromptError(f"{prompt.label} exists already (from {versions[prompt.version].source})")
        versions[prompt.version] = prompt

    def add_file(self, path: str | Path) -> list[Prompt]:
        """Load a prompt file (new prompts, or new versions of known ones); returns what it added."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise PromptError(f"cannot read prompt file {file}: {exc.strerror or exc}") from exc
        prompts = load_prompt_text(text, file.name)
        for prompt in prompts:
            if prompt.version in self._prompts.get(prompt.name, {}):
                raise PromptError(f"{file.name}: {prompt.label} exists already")
        for prompt in prompts:
            self._add(prompt)
        return prompts

    def get(self, name: str, version: int | None = None) -> Prompt:
        versions = self._prompts.get(name)
        if not versions:
            raise PromptError(f"unknown prompt {name!r}; known: {', '.join(self.names()) or 'none'}")
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            known = ", ".join(str(v) for v in sorted(versions))
            raise PromptError(f"prompt {name} has no version {version!r}; it has {known}")
        return versions[version]

    def names(self) -> list[str]:
        return sorted(self._prompts)

    def versions(self, name: str) -> list[int]:
        self.get(name)
        return sorted(self._prompts[name])

    def __iter__(self) -> Iterator[Prompt]:
        for name in self.names():
            yield from (self._prompts[name][v] for v in sorted(self._prompts[name]))

    def __contains__(self, name: object) -> bool:
        return name in self._prompts

    def frame(self) -> pd.DataFrame:
        """One row per prompt version: name, version, output, inputs, params, description."""
        rows = [
            {
                "name": p.name,
                "version": p.version,
                "latest": p.version == max(self._prompts[p.name]),
                "output": p.output,
                "inputs": ", ".join(s.name if s.required else f"{s.name}?" for s in p.inputs),
                "params": dict(p.params),
                "description": p.description,
            }
            for p in self
        ]
        columns = ["name", "version", "latest", "output", "inputs", "params", "description"]
        return pd.DataFrame(rows, columns=columns)


@functools.lru_cache(maxsize=1)
def _packaged() -> tuple[Prompt, ...]:
    prompts: list[Prompt] = []
    folder = importlib.resources.files("grace_core") / "prompts"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            prompts += load_prompt_text(entry.read_text(encoding="utf-8"), entry.name)
    return tuple(prompts)


def default_prompts() -> PromptLibrary:
    """A new library holding the prompts that ship with the package (``grace_core/prompts/*.yaml``)."""
    return PromptLibrary(_packaged())
