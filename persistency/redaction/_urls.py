"""The one URL masker: user information and secret query values out of any URL, on the raw text.

A URL parser cannot be trusted with a URL that holds a secret: a password with an unencoded ``/``,
``?`` or ``#`` ends ``urlsplit``'s netloc early (``http://svc:s3cr/et#x@host`` has netloc
``svc:s3cr``), so its "password" is wrong and the real one is shown as a path or fragment. Here
everything between ``://`` and the **last** ``@`` of the URL is user information: the user name is
kept when it is plain, the rest is masked. Query (and fragment) values named like secrets (``code``,
``sig``, ``key``, ``api-key``, ``X-Amz-Signature``, ...) are masked too.

Text is scanned with ``str.find`` and bounded patterns only: linear in its length, whatever it holds.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from urllib.parse import unquote

from persistency.redaction._names import is_secret_query_name

__all__ = ["URL_MASK", "mask_query_pairs", "mask_url", "mask_urls_in_text"]

URL_MASK = "****"
"""What `persistency.registry.redact_url` and the providers' messages put in place of a password."""

_ENDS = " \t\r\n\f\v\"'<>`"
"""Characters that end a URL inside free text."""
_END = re.compile(r"[\s\"'<>`]")
_PAIR = re.compile(r"(?<=[?&#;])([A-Za-z0-9_.~%\[\]-]{1,128})=([^&#;\s\"'<>`]{1,4096})")


def _is_mask(value: str, mask: str) -> bool:
    return value in (mask, URL_MASK) or (value.startswith("*") and value.strip("*").upper() in ("", "REDACTED"))


def _mask_pairs(part: str, sep: str, mask: str, keep: Collection[str] | None, extra: Collection[str],
                hidden: list[str]) -> str:
    """``a=1&code=x`` with secret values masked (every value not in ``keep`` when it is given)."""
    out = []
    for pair in part.split(sep):
        name, eq, value = pair.partition("=")
        if value and not _is_mask(value, mask):
            plain = unquote(name)
            secret = plain not in keep if keep is not None else is_secret_query_name(plain, extra)
            if secret:
                hidden.append(value)
                value = mask
        out.append(f"{name}{eq}{value}")
    return sep.join(out)


def mask_url(
    url: str, *, mask: str = URL_MASK, keep_query: Collection[str] | None = None, extra_names: Collection[str] = ()
) -> tuple[str, list[str]]:
    """``url`` safe to show, and the secret pieces it left out (for scrubbing other text of them).

    ``keep_query`` (a provider's own option names) turns on the strict mode: every query value
    not named there is masked, and so is a fragment. Without it only secret-like names are masked.
    A text without ``://`` is returned as it is.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url, []
    hidden: list[str] = []
    user = ""
    at = rest.rfind("@")
    if at >= 0:
        userinfo = rest[:at]
        name, colon, secret = userinfo.partition(":")
        if colon and not any(c in name for c in "/?#"):
            user, rest = f"{name}:{secret if _is_mask(secret, mask) else mask}@", rest[at + 1 :]
            hidden.append(secret)
        elif colon or not any(c in userinfo for c in "/?#"):
            user, rest = f"{userinfo if _is_mask(userinfo, mask) else mask}@", rest[at + 1 :]
            hidden.append(userinfo)
        # else: an '@' in the path (no ':' and a '/' before it): not user information
    base, hash_, fragment = rest.partition("#")
    if hash_:
        if keep_query is not None:
            hidden.append(fragment)
            fragment = mask if fragment else ""
        elif "=" in fragment:
            fragment = _mask_pairs(fragment, "&", mask, None, extra_names, hidden)
    base, q, query = base.partition("?")
    if q:
        query = _mask_pairs(query, "&", mask, keep_query, extra_names, hidden)
    shown = f"{scheme}://{user}{base}" + (f"?{query}" if q else "") + (f"#{fragment}" if hash_ else "")
    return shown, [h for h in hidden if h and not _is_mask(h, mask)]


def _token_start(text: str, floor: int, i: int) -> int:
    """Where the URL whose ``://`` is at ``i`` starts: after the last URL-ending character before it."""
    start = floor
    for c in _ENDS:
        j = text.rfind(c, floor, i)
        if j + 1 > start:
            start = j + 1
    return start


def _token_end(text: str, i: int) -> int:
    """Where the URL whose ``://`` is at ``i`` ends: at the first URL-ending character after it."""
    m = _END.search(text, i)
    return m.start() if m else len(text)


def mask_query_pairs(text: str, *, mask: str, extra_names: Collection[str] = (), found: list[str] | None = None) -> str:
    """``?code=x``, ``&sig=x``, ``;token=x`` anywhere in ``text`` with the secret values masked."""

    def repl(m: re.Match[str]) -> str:
        name, value = m.group(1), m.group(2)
        if _is_mask(value, mask) or not is_secret_query_name(unquote(name), extra_names):
            return m.group(0)
        if found is not None:
            found.append(value)
        return f"{name}={mask}"

    return _PAIR.sub(repl, text) if "=" in text else text


def mask_urls_in_text(
    text: str, *, mask: str = URL_MASK, extra_names: Collection[str] = (), found: list[str] | None = None
) -> str:
    """``text`` with every URL in it masked by `mask_url` and every secret query pair masked."""
    if "://" in text:
        out: list[str] = []
        pos = 0
        while True:
            i = text.find("://", pos)
            if i < 0:
                break
            start, end = _token_start(text, pos, i), _token_end(text, i)
            shown, hidden = mask_url(text[start:end], mask=mask, extra_names=extra_names)
            if found is not None:
                found.extend(hidden)
            out += [text[pos:start], shown]
            pos = end
        out.append(text[pos:])
        text = "".join(out)
    return mask_query_pairs(text, mask=mask, extra_names=extra_names, found=found)
