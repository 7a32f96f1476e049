"""Validating what callers pass in, with pydantic, into `ProviderConfigError` naming the option.

Backends describe their options as a pydantic model (strict types, bounds, ``extra="forbid"``)
and call `validate_options` at construction or URL parsing, so a bad value fails at once and
says what is accepted, instead of at the first save.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, NonNegativeInt, TypeAdapter, ValidationError

from persistency.errors import ProviderConfigError

__all__ = ["BackendOptions", "check_limit", "describe_errors", "validate_options"]

M = TypeVar("M", bound=BaseModel)
_LIMIT: TypeAdapter[NonNegativeInt | None] = TypeAdapter(NonNegativeInt | None, config=ConfigDict(strict=True))


class BackendOptions(BaseModel):
    """Base for a backend's options model: unknown names are refused, values are not coerced loosely."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def describe_errors(exc: ValidationError) -> str:
    """``name: what it accepts`` for each failed field (input values are not quoted: they may be secrets)."""
    parts = []
    for err in exc.errors()[:5]:
        name = ".".join(str(p) for p in err["loc"]) or "value"
        msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{name}: {msg}")
    return "; ".join(parts)


def validate_options(model: type[M], values: dict[str, Any], backend: str) -> M:
    """``values`` checked against ``model``; `ProviderConfigError` naming each bad option and what it accepts."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        accepted = ", ".join(model.model_fields)
        raise ProviderConfigError(
            f"{backend} option(s) refused: {describe_errors(exc)} (the options are: {accepted})"
        ) from exc


def check_limit(limit: object) -> int | None:
    """``limit`` of a listing: None or a whole number >= 0, else `ProviderConfigError`."""
    if (type(limit) is int and limit >= 0) or limit is None:
        return limit  # type: ignore[return-value]
    try:
        return _LIMIT.validate_python(limit)
    except ValidationError as exc:
        raise ProviderConfigError(
            f"limit must be None or a whole number >= 0, not {type(limit).__name__} {limit!r}"[:120]
        ) from exc
