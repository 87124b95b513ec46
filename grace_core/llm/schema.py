"""The JSON a model must answer with: a small subset of JSON Schema, and lenient extraction of the JSON itself.

The subset is what prompts need and what constrained decoding (llama.cpp grammars, OpenAI-style
``response_format``) understands: ``type`` (object, array, string, integer, number, boolean), ``properties``,
``required``, ``items``, ``enum``, ``minItems``, ``maxItems``, ``minLength``, ``maxLength``,
``additionalProperties`` and ``description``. Bounds matter for small models under a grammar: without
``maxLength`` a model stuck repeating itself fills ``max_tokens`` inside one string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from grace_core.errors import ModelOutputError

__all__ = ["check_schema", "extract_json", "schema_errors"]

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}
_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "items",
        "enum",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "additionalProperties",
        "description",
    }
)
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.DOTALL)


def check_schema(schema: Any, where: str = "$") -> list[str]:
    """Problems with a schema itself (keywords outside the subset, wrong shapes); [] when it is usable."""
    if not isinstance(schema, Mapping):
        return [f"{where}: a schema must be a mapping"]
    problems = [f"{where}: unsupported keyword {k!r}" for k in schema if k not in _KEYWORDS]
    kind = schema.get("type")
    if kind is not None and kind not in _TYPES:
        problems.append(f"{where}: unknown type {kind!r} (use one of {', '.join(_TYPES)})")
    for key, sub in (schema.get("properties") or {}).items():
        problems += check_schema(sub, f"{where}.{key}")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(k, str) for k in required):
        problems.append(f"{where}: required must be a list of property names")
    if "items" in schema:
        problems += check_schema(schema["items"], f"{where}[]")
    if "enum" in schema and not isinstance(schema["enum"], list):
        problems.append(f"{where}: enum must be a list")
    return problems


def schema_errors(value: Any, schema: Mapping[str, Any], where: str = "$") -> list[str]:
    """Where ``value`` does not fit ``schema`` (JSON paths), first problems first; [] when it fits."""
    kind = schema.get("type")
    if kind is not None:
        expected = _TYPES[kind]
        # bool is an int in Python, not in JSON
        if not isinstance(value, expected) or (isinstance(value, bool) and kind in ("integer", "number")):
            return [f"{where}: expected {kind}, got {_json_type(value)}"]
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(json.dumps(v) for v in schema["enum"])
        return [f"{where}: expected one of {allowed}, got {json.dumps(value)[:60]}"]
    errors: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        errors += [f"{where}: missing key {key!r}" for key in schema.get("required", []) if key not in value]
        if schema.get("additionalProperties") is False:
            errors += [f"{where}: unexpected key {key!r}" for key in value if key not in properties]
        for key, sub in properties.items():
            if key in value:
                errors += schema_errors(value[key], sub, f"{where}.{key}")
    elif isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{where}: expected at least {schema['minLength']} characters, got {len(value)}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{where}: expected at most {schema['maxLength']} characters, got {len(value)}")
    elif isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{where}: expected at least {schema['minItems']} items, got {len(value)}")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{where}: expected at most {schema['maxItems']} items, got {len(value)}")
        if "items" in schema:
            for i, item in enumerate(value):
                errors += schema_errors(item, schema["items"], f"{where}[{i}]")
    return errors


def _json_type(value: Any) -> str:
    for name, types in _TYPES.items():
        if isinstance(value, types) and not (isinstance(value, bool) and name != "boolean"):
            return name
    return "null" if value is None else type(value).__name__


def extract_json(text: str) -> Any:
    """The JSON value in a model's answer; raises ValueError (with the reason) when there is none.

    Models often wrap JSON in a Markdown fence or a sentence of prose: the whole text is tried first, then the
    inside of a fence, then the span from the first ``{`` to the last ``}``. Raw control characters (a newline)
    inside strings are accepted, as models write them.
    """
    stripped = text.strip()
    candidates = [stripped]
    fence = _FENCE.match(stripped)
    if fence:
        candidates.append(fence.group(1).strip())
    start, end = stripped.find("{"), stripped.rfind("}")
    if 0 <= start < end:
        candidates.append(stripped[start : end + 1])
    first_error = ""
    for candidate in candidates:
        try:
            return json.loads(candidate, strict=False)
        except ValueError as exc:
            first_error = first_error or str(exc)
    if not stripped:
        raise ModelOutputError("the answer is empty")
    raise ModelOutputError(f"the answer is not JSON ({first_error})")
