"""Redaction: secret fields, headers, URLs and credential-looking strings never survive; useful
configuration does."""

from __future__ import annotations

import json

from autogen import LLMConfig

from persistency.redaction import REDACTED, is_secret_key, redact, redact_llm_config, scrub, secret_values


def test_secret_keys() -> None:
    for key in (
        "api_key",
        "apiKey",
        "aws_access_key",
        "aws_secret_key",
        "aws_session_token",
        "gcp_auth_token",
        "credentials",
        "google_application_credentials",
        "azure_ad_token_provider",
        "http_client",
        "password",
        "Authorization",
        "x-api-key",
        "client_secret",
    ):
        assert is_secret_key(key), key
    for key in ("model", "max_tokens", "temperature", "api_type", "api_version", "base_url", "tags", "cache_seed"):
        assert not is_secret_key(key), key


def test_llm_config_model_dump_is_not_trusted() -> None:
    cfg = LLMConfig(
        {
            "model": "gpt-4o-mini",
            "api_key": "sk-live-0123456789abcdef",
            "max_tokens": 50,
            "default_headers": {"Authorization": "Bearer abcdefghijkl", "User-Agent": "me"},
        }
    )
    assert "sk-live-0123456789abcdef" in json.dumps(cfg.model_dump())  # what AG2 does
    out = redact_llm_config(cfg)
    text = json.dumps(out)
    assert "sk-live" not in text and "abcdefghijkl" not in text
    entry = out["config_list"][0]
    assert entry["model"] == "gpt-4o-mini" and entry["max_tokens"] == 50
    assert entry["api_key"] == REDACTED and entry["default_headers"] == {"Authorization": REDACTED, "User-Agent": "me"}


def test_urls_objects_and_credential_looking_strings() -> None:
    class Client:
        def __repr__(self) -> str:
            return "Client(token=hunter2hunter2)"

    out = redact(
        {
            "base_url": "https://bob:pw-123456@host/v1?sig=abc&x=1",
            "note": "sk-proj-abcdefghijklmnop",
            "aws": "AKIAABCDEFGHIJKLMNOP",
            "client": Client(),
            "fn": print,
            "n": float("nan"),
        }
    )
    text = json.dumps(out)
    assert "pw-123456" not in text and "sk-proj" not in text and "AKIA" not in text and "hunter2" not in text
    assert out["base_url"] == f"https://bob:{REDACTED}@host/v1?sig={REDACTED}&x=1"
    assert out["client"] == {
        "__object__": f"{__name__}.test_urls_objects_and_credential_looking_strings.<locals>.Client"
    }


def test_secret_values_and_scrub() -> None:
    cfg = {"config_list": [{"model": "m", "api_key": "key-abcdef123", "default_headers": {"X-Api-Key": "hdr-987654"}}]}
    values = secret_values(cfg)
    assert {"key-abcdef123", "hdr-987654"} <= values
    assert scrub("failed with key-abcdef123 and hdr-987654", values) == f"failed with {REDACTED} and {REDACTED}"
