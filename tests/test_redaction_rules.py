"""The redactor's rules one by one: by name, by value, the one URL masker, exception chains, user rules,
and patterns that stay linear on a megabyte of hostile text."""

from __future__ import annotations

import json
import re
import sys
import traceback
from typing import Any

import pytest

from persistency import redaction
from persistency.redaction import (
    REDACTED,
    Redactor,
    Rule,
    ScrubbedException,
    _text,
    _urls,
    add_rule,
    mask_url,
    redact,
    redact_llm_config,
    redact_text,
    redact_url,
    remove_rule,
    scrub,
    scrub_exception,
    secret_values,
)

if sys.version_info >= (3, 11):
    import re._parser as sre_parse
else:  # pragma: no cover
    import sre_parse

SECRET = "Zx9-s3cr3t-VALUE-42"


# -- by value ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"-----BEGIN RSA PRIVATE KEY-----\nMIIE{SECRET}\n-----END RSA PRIVATE KEY-----", ""),
        (f"key: -----BEGIN OPENSSH PRIVATE KEY-----\n{SECRET}", "key: "),  # no end marker: to the end
        (f"jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIx{SECRET}.abc_-def rest", "rest"),
        (f"Server=x;Database=y;Password={SECRET};Encrypt=yes", "Encrypt=yes"),
        (f"Driver={{d}};Uid=u;Pwd={{{SECRET};x}};Server=s", "Server=s"),
        (f"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={SECRET};EndpointSuffix=x", "EndpointSuffix=x"),
        (f"https://fn.invalid/api/x?code={SECRET}&name=y", "name=y"),
        (f"https://acct.invalid/c?sv=2024&sig={SECRET}", "sv=2024"),
        (f"https://h.invalid/cb#access_token={SECRET}&state=1", "state=1"),
        (f"presigned ?X-Amz-Credential={SECRET}&X-Amz-Signature={SECRET}", "presigned"),
        (f"http://svc:{SECRET}/et#x@proxy.invalid:3128/", "http://svc:"),
        (f"git clone https://{SECRET}@github.invalid/o/r.git", "@github.invalid/o/r.git"),
        (f"redis://:{SECRET}?x@10.0.0.1:6379/0 refused", "@10.0.0.1:6379/0 refused"),
        (f"Authorization: Bearer {SECRET}", "Authorization: Bearer "),
        (f"upstream said api_key={SECRET}; retry", "; retry"),
        (f"{{'password': '{SECRET}', 'user': 'bob'}}", "'user': 'bob'"),
        (f'{{"client_secret": "{SECRET}"}}', '"client_secret": '),
        (f"token: {SECRET}", "token: "),
        ("sk-proj-" + SECRET.replace("-", "") + "abc", ""),
        ("id AKIAABCDEFGHIJKLMNOP here", "here"),
    ],
)
def test_credentials_by_shape_in_free_text(text: str, kept: str) -> None:
    out = redact_text(text)
    assert "s3cr3t" not in out and "ABCDEFGHIJKLMNOP" not in out and "s3cr3tabc" not in out.lower(), out
    assert kept in out and (REDACTED in out or "****" in out), out
    assert redact_text(out) == out  # idempotent: masking a masked text changes nothing


@pytest.mark.parametrize(
    "text",
    [
        "KeyError: 'model'",
        "exit code=1 after 3 retries",
        "key: be brief and precise",
        "see https://docs.invalid/guide?page=2#top",
        "https://github.invalid/org/repo/@user",
        "the model is gpt-4o-mini, temperature=0.2",
        "Basic",
        "password",
        "",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


def test_values_by_name_and_shape_wherever_they_are_in_a_config() -> None:
    cfg = {
        "config_list": [
            {
                "model": "m",
                "model_client_cls": "Mine",
                "default_query": {"code": SECRET, "api-version": "1"},
                "extra_body": {"user_pass": SECRET, "hops": [{"x": [{"token": SECRET}]}, f"Bearer {SECRET}"]},
                "signer": f"-----BEGIN PRIVATE KEY-----\n{SECRET}\n-----END PRIVATE KEY-----\n",
                "dsn": f"Server=s;Password={SECRET}",
                "licence": SECRET,
                "code_execution_config": {"work_dir": "w"},
                "max_tokens": 5,
            }
        ]
    }
    out = redact_llm_config(cfg)
    assert SECRET not in json.dumps(out)
    entry = out["config_list"][0]
    assert entry["default_query"] == {"code": REDACTED, "api-version": "1"}
    assert entry["code_execution_config"] == {"work_dir": "w"} and entry["max_tokens"] == 5
    assert entry["dsn"] == f"Server=s;Password={REDACTED}"
    assert SECRET in secret_values(cfg)
    assert scrub(f"failed: {SECRET} / Password=other-pw", secret_values(cfg)) == (
        f"failed: {REDACTED} / Password={REDACTED}"
    )


@pytest.mark.parametrize(
    ("name", "secret"),
    [("user_pass", True), ("licence", True), ("licence_key", True), ("x-auth-token", True), ("key", True),
     ("sort_key", True), ("privateKey", True), ("key_prefix", False), ("keyPrefix", False), ("key_type", False),
     ("code_execution_config", False), ("max_tokens", False), ("passthrough", False), ("api_type", False)],
)
def test_names(name: str, secret: bool) -> None:
    assert redaction.is_secret_key(name) is secret


# -- the one URL masker -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:s3cret@host:6379/0", "redis://user:****@host:6379/0"),
        ("redis://:pa/ss@host:6379/0", "redis://:****@host:6379/0"),
        ("redis://:p#ss?x@host:6379/0", "redis://:****@host:6379/0"),
        ("http://svc:s3cr/et#x@h/v1", "http://svc:****@h/v1"),
        ("https://a:b@c@host/", "https://a:****@host/"),
        ("https://tok3n@host/", "https://****@host/"),
        ("https://us/er:pw@host/", "https://****@host/"),
        ("https://h/p?api-key=k&x=1&code=c", "https://h/p?api-key=****&x=1&code=****"),
        ("https://h/p@x", "https://h/p@x"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
        ("not a url", "not a url"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    from persistency.registry import redact_url as registry_redact_url

    assert registry_redact_url(url) == shown


def test_mask_url_strict_mode_and_hidden_pieces() -> None:
    shown, hidden = mask_url("redis://u:pw@h/0?key_prefix=a&passwd=p2&ttl=3#frag", keep_query={"key_prefix", "ttl"})
    assert shown == "redis://u:****@h/0?key_prefix=a&passwd=****&ttl=3#****"
    assert set(hidden) == {"pw", "p2", "frag"}


def test_every_url_in_a_text_is_masked() -> None:
    text = "from redis://:a1/b2@h1:1/0 to 'https://u:c3@h2/x?sig=d4' and \"ftp://e5@h3\""
    out = redact_url(text)
    assert not any(s in out for s in ("a1", "b2", "c3", "d4", "e5")), out
    assert "h1:1/0" in out and "h2/x" in out and "h3" in out


# -- exceptions ---------------------------------------------------------------------------------------------
def _all_text(exc: BaseException) -> str:
    parts = ["".join(traceback.format_exception(type(exc), exc, exc.__traceback__))]
    e: BaseException | None = exc
    while e is not None:
        parts += [repr(e.args), str(e)]
        e = e.__cause__ or e.__context__
    return "\n".join(parts)


def test_scrub_exception_redacts_the_whole_chain_in_place() -> None:
    try:
        try:
            try:
                raise ValueError(f"bad url redis://:{SECRET}@h/0")
            except ValueError:
                raise OSError(13, f"denied token={SECRET}", f"/tmp/Password={SECRET}") from None
        except OSError as inner:
            raise RuntimeError("wrapped", {"api_key": SECRET}) from inner
    except RuntimeError as exc:
        if hasattr(exc, "add_note"):
            exc.add_note(f"note Bearer {SECRET}")
        assert SECRET in _all_text(exc)
        out = scrub_exception(exc, [])
        assert out is exc  # in place
        assert SECRET not in _all_text(exc)
        assert isinstance(exc.__cause__, OSError) and exc.__cause__.errno == 13
        assert isinstance(exc.__cause__.__context__, ValueError)


def test_an_exception_whose_str_ignores_args_is_replaced_by_a_redacted_copy() -> None:
    class Stubborn(Exception):
        def __init__(self, secret: str) -> None:
            super().__init__("safe")
            self.secret = secret

        def __str__(self) -> str:
            return f"failed with password={self.secret}"

    try:
        try:
            raise Stubborn(SECRET)
        except Stubborn as stubborn:
            raise KeyError("outer") from stubborn
    except KeyError as exc:
        out = scrub_exception(exc)
        assert out is exc and isinstance(exc.__cause__, ScrubbedException)
        assert exc.__cause__.original_type.endswith("Stubborn")
        assert SECRET not in _all_text(exc) and "password=" in str(exc.__cause__)
        top = scrub_exception(Stubborn(SECRET))
        assert isinstance(top, ScrubbedException) and SECRET not in str(top)


def test_scrub_exception_survives_cycles_and_masks_known_pieces() -> None:
    a, b = ValueError("as 'pa'"), ValueError("ss is wrong")
    a.__context__, b.__context__ = b, a
    scrub_exception(a, ["pa/ss"])
    assert str(a) == "as '****'" and str(b) == "**** is wrong"  # short pieces where they stand alone
    c = ValueError("class pass: 'p' 'a/'")
    scrub_exception(c, ["ss/p/a"])
    assert str(c) == "class pass: '****' '****/'"  # never inside a word


# -- user rules -------------------------------------------------------------------------------------------------
def test_user_rules_by_name_pattern_and_callable() -> None:
    value = {"tenant_pin": "1234", "vendor": "ACME-77-XY", "note": "ref INT-0042-Q", "model": "m"}
    assert redact(value) == value
    rules = [add_rule(names=["tenant_pin"]), add_rule(pattern=r"INT-\d{4}-[A-Z]"),
             add_rule(match=lambda v: v.startswith("ACME-"))]
    try:
        out = redact(value)
        assert out == {"tenant_pin": REDACTED, "vendor": REDACTED, "note": f"ref {REDACTED}", "model": "m"}
        assert redact_text("tenant_pin=1234 and ACME-77-XY") == f"tenant_pin={REDACTED} and {REDACTED}"
        assert redact_url("https://h/?tenant_pin=1234") == "https://h/?tenant_pin=****"
    finally:
        for rule in rules:
            remove_rule(rule)
    assert redact(value) == value


def test_a_redactor_of_ones_own_does_not_change_the_default() -> None:
    mine = Redactor([Rule(names=frozenset({"shop_code"}))], mask="<hidden>")
    assert mine.redact({"shop_code": "x", "api_key": "y"}) == {"shop_code": "<hidden>", "api_key": "<hidden>"}
    assert redact({"shop_code": "x"}) == {"shop_code": "x"}
    assert redaction.default_redactor().rules == ()
    with pytest.raises(ValueError, match="needs names"):
        mine.add_rule()
    with pytest.raises(TypeError):
        mine.add_rule(match="not callable")  # type: ignore[arg-type]


# -- linear time on hostile text ---------------------------------------------------------------------------------
def _repeats(pattern: re.Pattern[str]) -> list[tuple[int, bool]]:
    """(max, nested?) for every repetition in the pattern."""
    found: list[tuple[int, bool]] = []

    def walk(items: Any, inside: bool) -> None:
        for op, arg in items:
            name = str(op)
            if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                _lo, hi, sub = arg
                found.append((hi, inside))
                walk(sub, True)
            elif name in ("SUBPATTERN",):
                walk(arg[-1], inside)
            elif name in ("BRANCH",):
                for branch in arg[1]:
                    walk(branch, inside)
            elif name in ("ASSERT", "ASSERT_NOT"):
                walk(arg[1], inside)

    walk(sre_parse.parse(pattern.pattern, pattern.flags), False)
    return found


def test_every_pattern_is_bounded_and_flat() -> None:
    assert [hi > 8192 or nested for hi, nested in _repeats(re.compile(r"(a+)+b"))] == [True, True]  # the check sees
    patterns = [*_text.PATTERNS, _urls._PAIR, _urls._END]
    assert len(patterns) >= 8 and sum(len(_repeats(p)) for p in patterns) > 20
    for pattern in patterns:
        for hi, nested in _repeats(pattern):
            assert hi <= 8192 and not nested, pattern.pattern


@pytest.mark.parametrize(
    "unit",
    ["eyJ", "eyJa.", "a=", "k: ", "://", "@:/", "-----BEGIN ", "-----BEGIN PRIVATE KEY-----", "password=",
     "Bearer ", "?code", "&x=1", "sk-", "Pwd={", "a", " "],
)
def test_a_megabyte_of_hostile_text_is_scanned_in_linear_work(unit: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hand-written loops do work proportional to the text: counted, not timed."""
    calls = {"n": 0}
    real_search, real_mask = _text._LABEL, _urls.mask_url

    class Counting:
        pattern, flags = real_search.pattern, real_search.flags

        def search(self, text: str, pos: int = 0) -> Any:
            calls["n"] += 1
            return real_search.search(text, pos)

    def counting_mask(url: str, **kw: Any) -> Any:
        calls["n"] += 1
        return real_mask(url, **kw)

    monkeypatch.setattr(_text, "_LABEL", Counting())
    monkeypatch.setattr(_urls, "mask_url", counting_mask)
    counts = []
    for size in (500_000, 1_000_000):
        calls["n"] = 0
        text = (unit * (size // len(unit) + 1))[:size]
        out = redact_text(text)
        assert len(out) <= len(text) + 64 or unit in ("-----BEGIN PRIVATE KEY-----",)
        counts.append(calls["n"])
    assert counts[1] <= 2 * counts[0] + 2, counts
    plain = ("lorem ipsum dolor sit amet " * 40_000)[:1_000_000]
    assert redact_text(plain) == plain


def test_scrub_masks_known_secrets_whole_and_url_decoded() -> None:
    assert scrub("auth failed for p@ss w0rd!", ["p%40ss%20w0rd%21"]) == f"auth failed for {REDACTED}"
    err = ValueError("bad password hunter2x")
    assert scrub_exception(err, "hunter2x") is err and str(err) == "bad password ****"
