"""One model interface for the workbench: prompts as versioned data, pluggable backends, every call on the ledger.

``ws.llm.complete(name, inputs, purpose=...)`` renders a prompt (``grace_core/prompts/*.yaml``), calls a
backend (``offline`` policy, an OpenAI-compatible ``http`` server, or an embedded ``llamacpp`` model) and records
the call as an ``llm.completed`` or ``llm.failed`` event; ``complete_json`` also parses and checks the answer
against the prompt's schema. A ``Cassette`` replays recorded calls so a rerun reproduces the ledger exactly.
"""

from .base import Backend, Request, Result, prompt_hash
from .cassette import Cassette, Recording
from .engine import BACKENDS, Completion, LanguageModels
from .http import HttpBackend
from .llamacpp import LlamaCppBackend, default_model_path
from .offline import DEFAULT_HANDLERS, OfflineBackend, OfflineHandler
from .prompts import InputSpec, Prompt, PromptLibrary, default_prompts
from .schema import extract_json, schema_errors

__all__ = [
    "BACKENDS",
    "DEFAULT_HANDLERS",
    "Backend",
    "Cassette",
    "Completion",
    "HttpBackend",
    "InputSpec",
    "LanguageModels",
    "LlamaCppBackend",
    "OfflineBackend",
    "OfflineHandler",
    "Prompt",
    "PromptLibrary",
    "Recording",
    "Request",
    "Result",
    "default_model_path",
    "default_prompts",
    "extract_json",
    "prompt_hash",
    "schema_errors",
]
