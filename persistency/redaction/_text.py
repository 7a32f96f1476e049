"""Redaction by value: credentials recognised by their shape wherever they are in a text.

`redact_text` replaces, in this order:

1. private key blocks (``-----BEGIN ... PRIVATE KEY-----`` to its ``-----END ...-----``);
2. user information and secret query values of every URL (`persistency.redaction._urls`);
3. ``Password=`` / ``Pwd=`` / ``AccountKey=`` / ``SharedAccessKey=`` segments of connection strings;
4. JSON Web Tokens (``eyJ...``.``...``.``...``);
5. well-known key formats (``sk-...``, ``AKIA...``, ``ghp_...``, ``xox?-...``, ``AIza...``,
   ``hf_...``) and the token after ``Bearer`` / ``Basic``;
6. the value after a secret label (``api_key=...``, ``"password": "..."``, ``token: ...``);
7. the user's own patterns and value rules.

Every pattern has bounded repetitions and no nested ones, and each starts only at a word boundary,
so the work is linear in the text's length (a test checks the patterns' shape).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from persistency.redaction._names import is_secret_key, is_strong_name
from persistency.redaction._urls import mask_urls_in_text

__all__ = ["PATTERNS", "TextRules", "redact_text_with"]

_B = r"(?<![A-Za-z0-9_-])"  # a match starts only where a word starts: each position is tried once
_PEM_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]{1,48})-----")
_CONN = re.compile(
    r"(?i)(?<![A-Za-z0-9_])(password|pwd|passwd|accountkey|sharedaccesskey|sharedsecret|clientsecret)"
    r"[ \t]{0,3}=[ \t]{0,3}(\{[^}\n]{0,4096}\}|\"[^\"\n]{0,4096}\"|'[^'\n]{0,4096}'|[^;&\r\n]{1,4096})"
)
_JWT = re.compile(_B + r"eyJ[A-Za-z0-9_-]{6,4096}\.[A-Za-z0-9_-]{2,8192}\.[A-Za-z0-9_-]{0,4096}")
_KNOWN = re.compile(
    _B + r"(?:sk-[A-Za-z0-9_-]{12,512}|sk_[A-Za-z0-9_]{12,512}|rk_(?:live|test)_[A-Za-z0-9]{8,512}"
    r"|A(?:KIA|SIA)[0-9A-Z]{16}|xox[abprs]-[A-Za-z0-9-]{10,512}|gh[pousr]_[A-Za-z0-9]{20,512}"
    r"|github_pat_[A-Za-z0-9_]{20,512}|glpat-[A-Za-z0-9_-]{20,512}|AIza[0-9A-Za-z_-]{30,512}"
    r"|hf_[A-Za-z0-9]{30,512}|npm_[A-Za-z0-9]{30,512})"
)
_SCHEME_TOKEN = re.compile(r"(?<![A-Za-z0-9_])((?i:bearer)|Basic)[ \t]{1,3}([A-Za-z0-9._~+/=-]{8,8192})")
_LABEL = re.compile(r"(?<![A-Za-z0-9_.-])[\"']?([A-Za-z][A-Za-z0-9_.-]{0,63})[\"']?[ \t]{0,3}([=:])[ \t]{0,3}")
_VALUE = re.compile(r"\"[^\"\n]{0,4096}\"|'[^'\n]{0,4096}'|[^\s\"'&,;<>{}\[\]()]{1,4096}")

PATTERNS: Sequence[re.Pattern[str]] = (_PEM_BEGIN, _CONN, _JWT, _KNOWN, _SCHEME_TOKEN, _LABEL, _VALUE)
"""The built-in patterns (for the test that checks they are bounded)."""

_SCHEMES = frozenset({"bearer", "basic", "token"})
"""Words after ``Authorization:`` that name a scheme; the token after them is what is masked."""
_WEAK_LABELS = frozenset({"key", "auth", "sig", "pass", "pw", "licence", "license", "code", "sas", "otp"})
"""Words too common in prose to redact what follows ``word=`` in free text (query pairs still are)."""


@dataclass(frozen=True)
class TextRules:
    """What a redactor applies to text: the mask, the user's names, patterns and value rules."""

    mask: str
    names: frozenset[str] = frozenset()
    patterns: tuple[re.Pattern[str], ...] = ()
    predicates: tuple[Callable[[str], bool], ...] = ()


def _is_masked(value: str, mask: str) -> bool:
    """True for a value that already is a mask (possibly quoted or followed by punctuation)."""
    return value.lstrip("\"'{").startswith((mask, "****", "**REDACTED**"))


def _pem(text: str, mask: str, found: list[str] | None) -> str:
    if "-----BEGIN " not in text:
        return text
    out: list[str] = []
    pos = 0
    while True:
        m = _PEM_BEGIN.search(text, pos)
        if m is None:
            break
        label = m.group(1)
        if not any(w in label for w in ("PRIVATE", "SECRET", "KEY")):
            out.append(text[pos : m.end()])
            pos = m.end()
            continue
        end_marker = f"-----END {label}-----"
        stop = text.find(end_marker, m.end())
        stop = len(text) if stop < 0 else stop + len(end_marker)
        if found is not None:
            found.append(text[m.start() : stop])
        out += [text[pos : m.start()], mask]
        pos = stop
    out.append(text[pos:])
    return "".join(out)


def _sub(pattern: re.Pattern[str], text: str, repl: Callable[[re.Match[str]], str]) -> str:
    return pattern.sub(repl, text)


def _labels(text: str, rules: TextRules, found: list[str] | None) -> str:
    """The value after each secret label masked; values of other labels are scanned for labels too."""
    if "=" not in text and ":" not in text:
        return text
    out: list[str] = []
    pos = last = 0
    while True:
        m = _LABEL.search(text, pos)
        if m is None:
            break
        name, sep = m.group(1), m.group(2)
        secret = (
            is_strong_name(name, rules.names)
            if sep == ":"
            else (is_secret_key(name, rules.names) and name.lower() not in _WEAK_LABELS)
            or name.lower() in rules.names
        )
        value = _VALUE.match(text, m.end()) if secret else None
        if value is None or _is_masked(value.group(0), rules.mask) or value.group(0).lower() in _SCHEMES:
            pos = m.end()
            continue
        raw = value.group(0)
        quote = raw[0] if raw[0] in "\"'" and len(raw) > 1 and raw[-1] == raw[0] else ""
        if found is not None:
            found.append(raw[1:-1] if quote else raw)
        out += [text[last : m.end()], f"{quote}{rules.mask}{quote}"]
        pos = last = value.end()
    out.append(text[last:])
    return "".join(out)


def _user_rules(text: str, rules: TextRules, found: list[str] | None) -> str:
    def repl(m: re.Match[str]) -> str:
        if found is not None:
            found.append(m.group(0))
        return rules.mask

    for pattern in rules.patterns:
        text = pattern.sub(repl, text)
    if rules.predicates:
        words = re.split(r"([\s\"'<>,;()\[\]{}]+)", text)
        changed = False
        for i in range(0, len(words), 2):
            word = words[i]
            if word and word != rules.mask and any(p(word) for p in rules.predicates):
                if found is not None:
                    found.append(word)
                words[i], changed = rules.mask, True
        if changed:
            text = "".join(words)
    return text


def redact_text_with(text: str, rules: TextRules, found: list[str] | None = None) -> str:
    """``text`` with every credential found by shape replaced by ``rules.mask`` (see the module doc).

    ``found`` collects the secrets replaced, so that other text can be scrubbed of them too.
    """
    if not text:
        return text
    mask = rules.mask

    def whole(m: re.Match[str]) -> str:
        if found is not None:
            found.append(m.group(0))
        return mask

    def group2(m: re.Match[str]) -> str:
        if _is_masked(m.group(2), mask):
            return m.group(0)
        if found is not None:
            found.append(m.group(2))
        return m.group(0)[: m.start(2) - m.start(0)] + mask

    text = _pem(text, mask, found)
    text = mask_urls_in_text(text, mask=mask, extra_names=rules.names, found=found)
    if "=" in text:
        text = _sub(_CONN, text, group2)
    if "eyJ" in text:
        text = _sub(_JWT, text, whole)
    text = _sub(_KNOWN, text, whole)
    text = _sub(_SCHEME_TOKEN, text, group2)
    text = _labels(text, rules, found)
    return _user_rules(text, rules, found)
