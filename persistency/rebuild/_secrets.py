"""Secrets and model clients on the way back in: redacted fields filled from the caller or the environment.

A checkpoint keeps ``llm_config`` with every secret replaced by ``**REDACTED**`` (a URL keeps its
shape with the secret part masked, URL-encoded inside a query). Here each redacted field gets the
caller's value (``secrets``, by field or ``agent.field``) or the environment's; a whole secret found
nowhere is left out with a warning; a value with a redacted *part* (a URL) is refused in strict
mode and reported in lenient mode, never passed on silently.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

from persistency.errors import ResumeError
from persistency.redaction import REDACTED
from persistency.scripted import ScriptedModelClient

__all__ = ["Problems", "client_names", "clients", "fill_llm_config"]

_BUILTIN_CLIENTS: dict[str, type] = {"ScriptedModelClient": ScriptedModelClient}
# Where a redacted field is looked up in the environment when the caller gives no value.
_ENV_BY_KEY = {
    "aws_access_key": ("AWS_ACCESS_KEY_ID",),
    "aws_secret_key": ("AWS_SECRET_ACCESS_KEY",),
    "aws_session_token": ("AWS_SESSION_TOKEN",),
    "gcp_auth_token": ("GCP_AUTH_TOKEN",),
}
_API_KEY_ENV = {
    "openai": ("OPENAI_API_KEY",),
    "azure": ("AZURE_OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "google": ("GOOGLE_API_KEY", "GEMINI_API_KEY"),
    "mistral": ("MISTRAL_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "together": ("TOGETHER_API_KEY",),
    "cohere": ("COHERE_API_KEY",),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "cerebras": ("CEREBRAS_API_KEY",),
}


@dataclass
class Problems:
    """What a rebuild could not restore exactly: refused in strict mode (all named in one error), else warned."""

    strict: bool
    warnings: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def lossy(self, text: str, fallback: str) -> None:
        """Something is not restored as it was: a refusal when strict, a warning saying the fallback otherwise."""
        if self.strict:
            self.refused.append(text)
        else:
            self.warnings.append(f"{text} ({fallback})")

    def check(self, what: str) -> None:
        """Raise `ResumeError` naming everything refused."""
        if self.refused:
            raise ResumeError(f"{what} cannot be rebuilt exactly: " + "; ".join(self.refused))


_MARKS = (REDACTED, quote(REDACTED), quote_plus(REDACTED), quote(REDACTED, safe=""))


def _has_redacted_part(value: str) -> bool:
    return any(mark in value for mark in _MARKS)


def _env_names(key: str, api_type: str | None) -> tuple[str, ...]:
    if key == "api_key":
        return _API_KEY_ENV.get((api_type or "openai").lower(), ())
    return _ENV_BY_KEY.get(key, ())


_DROP = object()


@dataclass
class _Filler:
    owner: str
    secrets: Mapping[str, str]
    env: Mapping[str, str]
    problems: Problems
    objects: Mapping[str, Any]
    """Values for stored objects, by field (``response_format``), from the caller."""

    def given(self, key: str) -> str | None:
        for name in (f"{self.owner}.{key}", key):
            if name in self.secrets:
                return self.secrets[name]
        return None

    def fill(self, value: Any, api_type: str | None = None, key: str | None = None) -> Any:
        """Replace each redacted field with the caller's or the environment's value, or drop it."""
        if isinstance(value, dict):
            if "__object__" in value and len(value) == 1:
                return self.stored_object(str(value["__object__"]), key)
            api = value.get("api_type", api_type)
            out = {}
            for k, v in value.items():
                filled = self.fill(v, api if isinstance(api, str) else None, k)
                if filled is not _DROP:
                    out[k] = filled
            return out
        if isinstance(value, list):
            return [x for x in (self.fill(v, api_type, key) for v in value) if x is not _DROP]
        if value == REDACTED and key is not None:
            given = self.given(key)
            if given is not None:
                return given
            for var in _env_names(key, api_type):
                if self.env.get(var):
                    return self.env[var]
            self.problems.warnings.append(f"{self.owner}: no value for the redacted {key!r}; left out")
            return _DROP
        if isinstance(value, str) and key is not None and _has_redacted_part(value):  # a URL's password or query
            given = self.given(key)
            if given is not None:
                return given
            self.problems.lossy(
                f"{self.owner}: {key!r} has a redacted part; pass the whole value as "
                f"secrets[{self.owner + '.' + key!r}]",
                "kept with the redacted part",
            )
        return value

    def stored_object(self, cls: str, key: str | None) -> Any:
        if key is not None and key in self.objects:
            return self.objects[key]
        text = f"{self.owner}: {key} was a {cls} object and is not restored"
        if key == "response_format":
            self.problems.lossy(f"{text}; pass response_formats={{{self.owner!r}: ...}}", "left out")
        else:
            self.problems.warnings.append(text)
        return _DROP


def fill_llm_config(
    stored: Any,
    owner: str,
    secrets: Mapping[str, str],
    env: Mapping[str, str],
    problems: Problems,
    objects: Mapping[str, Any] | None = None,
) -> Any:
    """A stored ``llm_config`` made usable again: secrets filled, stored objects given or reported."""
    if stored is None or stored is False:
        return stored
    filled = _Filler(owner, secrets, env, problems, objects or {}).fill(copy.deepcopy(stored))
    return filled if isinstance(filled, dict) else False


def client_names(llm_config: Any) -> list[str]:
    """The custom model client classes a config names."""
    if not isinstance(llm_config, dict):
        return []
    return [str(e["model_client_cls"]) for e in llm_config.get("config_list", []) if e.get("model_client_cls")]


def clients(model_clients: Mapping[str, type] | Sequence[type] | None) -> dict[str, type]:
    """The model client classes a rebuild may register, by name (`ScriptedModelClient` always)."""
    out = dict(_BUILTIN_CLIENTS)
    if isinstance(model_clients, Mapping):
        out.update(model_clients)
    elif model_clients:
        out.update({c.__name__: c for c in model_clients})
    return out
