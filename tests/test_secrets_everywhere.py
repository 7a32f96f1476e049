"""33 kinds of secret, each planted with a distinctive value, never reach a stored byte, a CLI line, a log
record or an exception chain, on every backend.

Each secret holds ``PREFIX + NN`` (NN is the kind's number in `KINDS`), so one scan for the prefix
finds any leak and names its kind. The chat runs with every secret in every agent's, the manager's
and the speaker selection's ``llm_config``; a second run fails with an error whose text carries some
of them; library errors are provoked with secret-bearing URLs. Then:

- **stored bytes**: every file / object / Redis value / SQLite file and column, expanded (Redis zlib,
  S3 gzip packs);
- **CLI**: ``sessions``, ``show`` (session and checkpoint), ``export``, ``verify``, and error lines;
- **logs**: the root logger and every ``persistency.*`` logger at DEBUG, formatted with tracebacks;
- **exceptions**: every exception the library raised, walked along ``__cause__``/``__context__``
  and printed by ``traceback.format_exception``.

Each channel has a positive control (it holds the transcript, the masked URL, the exception's type)
so that an empty scan cannot pass for a clean one.
"""

from __future__ import annotations

import logging
import re
import traceback
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from autogen import Agent, ConversableAgent, GroupChat, GroupChatManager, LLMConfig
from typer.testing import CliRunner

from persistency import Persistency, PersistencyError, provider_from_url
from persistency.cli import app
from persistency.redaction import add_rule, remove_rule
from persistency.scripted import ScriptedModelClient
from tests.every_backend import backend, sqlite_values, storage_url
from tests.helpers_ag2 import Crash
from tests.test_feature_secrets import _expanded, raw_bytes

__all__ = ["backend", "storage_url"]  # fixtures: every backend of tests/conftest.py and SQLite

#: The 33 kinds, by number. 1-20 were covered before issue #13; 21-33 are the ones it found leaking.
KINDS: dict[int, str] = {
    1: "api_key (openai entry)",
    2: "password in base_url user information",
    3: "api-key= query value in base_url",
    4: "Authorization: Bearer default header",
    5: "X-Api-Key default header",
    6: "any other default header (X-Trace-Id)",
    7: "http_client object carrying an Authorization header",
    8: "aws_access_key (bedrock)",
    9: "aws_secret_key (bedrock)",
    10: "aws_session_token (bedrock)",
    11: "api_key of an azure entry",
    12: "azure_ad_token_provider (a callable returning the token)",
    13: "credentials (google)",
    14: "google_application_credentials",
    15: "gcp_auth_token (anthropic on vertex)",
    16: "run-end error text echoing the api key",
    17: "sk-... key by value under a neutral name",
    18: "AKIA... access key id by value under a neutral name",
    19: "Bearer token by value inside free text",
    20: "sig= (SAS) query value in a URL parameter",
    21: "default_query={'code': ...} (Azure Functions key)",
    22: "?code= query value in base_url (Azure Functions key)",
    23: "extra_body user_pass",
    24: "Password= segment of a connection string",
    25: "PEM private key block in a custom model-client parameter",
    26: "JWT in a custom model-client parameter",
    27: "licence key in a custom model-client parameter",
    28: "run-end error text carrying a JWT and a Password= segment (by shape only)",
    29: "URL user information with unencoded '/' and '#' (http://svc:s3cr/et#x@...)",
    30: "Redis URL password with unencoded '#', '/' and '?' (error, __cause__, CLI line)",
    31: "Pwd={...} segment of an ODBC connection string",
    32: "token nested in lists and dicts of extra_body",
    33: "a value only a user rule recognises (add_rule(match=...))",
}
assert len(KINDS) == 33


class Planted:
    """One distinctive secret per kind: ``PREFIX`` + the kind's two-digit number (+ filler)."""

    def __init__(self) -> None:
        self.prefix = "S3CR3T" + uuid.uuid4().hex[:8].upper()

    def __call__(self, kind: int, filler: str = "Zq9") -> str:
        assert kind in KINDS
        return f"{self.prefix}{kind:02d}{filler}"

    def leaks(self, text: str) -> list[str]:
        """The kinds whose secret (or a piece of it) is in ``text``."""
        return sorted({f"{m.group(1)}: {KINDS.get(int(m.group(1)), '?')}"
                       for m in re.finditer(re.escape(self.prefix) + r"(\d\d)", text)})


def redis_password(s: Planted) -> str:
    """Kind 30: every piece between URL delimiters carries the prefix, so any piece that leaks is seen."""
    return f"{s(30, 'a')}/{s(30, 'b')}#{s(30, 'c')}?{s(30, 'd')}"


def pem(s: Planted) -> str:
    body = s(25, "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC")
    return f"-----BEGIN PRIVATE KEY-----\n{body}\n{s(25, 'Kq')}\n-----END PRIVATE KEY-----\n"


def jwt(s: Planted, kind: int) -> str:
    return f"eyJhbGciOiJSUzI1NiJ9.eyJ{s(kind, 'zdWIi')}.{s(kind, 'sig-_x')}"


def planted_config(s: Planted, script: list[str]) -> LLMConfig:
    """Every config-borne kind, in entries a scripted model client answers (offline)."""
    common: dict[str, Any] = {"model_client_cls": "ScriptedModelClient", "script": script}
    import httpx

    return LLMConfig(
        {
            "model": "scripted",
            "api_key": s(1),
            "base_url": f"https://user:{s(2)}@example.invalid/v1?api-key={s(3)}&code={s(22)}&x=1",
            "default_headers": {"Authorization": f"Bearer {s(4)}", "X-Api-Key": s(5), "X-Trace-Id": s(6)},
            "http_client": httpx.Client(headers={"Authorization": f"Bearer {s(7)}"}),
            "default_query": {"code": s(21), "api-version": "2024-06-01"},
            "extra_body": {
                "user_pass": s(23),
                "routing": [{"hops": [{"token": s(32)}]}, {"note": f"use Bearer {s(19, 'abcdefgh')} upstream"}],
            },
            # custom model-client parameters under neutral names: found by the value's shape
            "signer": pem(s),
            "assertion": jwt(s, 26),
            "licence": s(27),
            "warehouse": f"Server=db.invalid;Database=x;User Id=app;Password={s(24)};Encrypt=yes",
            "odbc": f"Driver={{ODBC Driver 18}};Server=db.invalid;Uid=app;Pwd={{{s(31)};x}};",
            "proxy": f"http://svc:{s(29, 's3cr')}/et#{s(29, 'x')}@proxy.invalid:3128/",
            "blob_url": f"https://acct.blob.invalid/c/b?sv=2024-01-01&sp=r&sig={s(20)}",
            "fallback_key_hint": f"sk-{s(17, 'abcdefghijkl')}",
            "aws_hint": f"AKIA{s(18)}"[:20],
            "vendor_param": f"ACME-{s(33)}",
            **common,
        },
        {"api_type": "bedrock", "model": "m", "aws_access_key": s(8), "aws_secret_key": s(9),
         "aws_session_token": s(10), "aws_region": "us-east-1", **common},
        {"api_type": "azure", "model": "m", "api_key": s(11), "azure_ad_token_provider": lambda: s(12),
         "base_url": "https://x.openai.azure.com", "api_version": "2024-06-01", **common},
        {"api_type": "google", "model": "gemini", "api_key": s(1), "credentials": s(13),
         "google_application_credentials": s(14), "project_id": "p", "location": "l", **common},
        {"api_type": "anthropic", "model": "claude", "api_key": s(1), "gcp_auth_token": s(15),
         "gcp_project_id": "p", **common},
    )


def planted_chat(s: Planted, *, fail: bool = False) -> tuple[ConversableAgent, GroupChatManager]:
    agents = []
    for name in ("solver", "checker"):
        agent = ConversableAgent(name, llm_config=planted_config(s, [f"{name} speaks"] * 5), human_input_mode="NEVER")
        for _ in range(5):  # AG2 activates one config entry per registration
            agent.register_model_client(ScriptedModelClient)
        agents.append(agent)
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER", default_auto_reply="go on")
    if fail:  # an upstream error quoting the key (16), a JWT and a connection string (28)

        def failing(recipient: Any, messages: Any = None, sender: Agent | None = None, config: Any = None) -> Any:
            if len(messages or []) >= 3:
                raise Crash(f"upstream said key={s(1)} is wrong; token {jwt(s, 28)}; dsn Password={s(28)};")
            return False, None

        user.register_reply([Agent, None], failing, position=0)
    gc = GroupChat([user, *agents], messages=[], max_round=6, speaker_selection_method="round_robin",
                   select_speaker_auto_llm_config=planted_config(s, ["solver"]))
    return user, GroupChatManager(gc, name="manager", llm_config=planted_config(s, ["unused"]))


class Logs(logging.Handler):
    """Every record of the root logger and of ``persistency.*`` at DEBUG, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logs() -> Iterator[Logs]:
    handler = Logs()
    root, ours = logging.getLogger(), logging.getLogger("persistency")
    levels = root.level, ours.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    ours.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        ours.setLevel(levels[1])


@pytest.fixture
def user_rule() -> Iterator[None]:
    """Kind 33: the user's own rule for their vendor's key format."""
    rule = add_rule(names=["vendor_param"], match=lambda v: v.startswith("ACME-"))
    try:
        yield
    finally:
        remove_rule(rule)


def chain_text(exc: BaseException) -> str:
    """The exception printed as a traceback, plus the message and args of every link of its chain."""
    parts = ["".join(traceback.format_exception(type(exc), exc, exc.__traceback__))]
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        parts += [repr(e.args), str(e), *map(str, getattr(e, "__notes__", []))]
        todo += [e.__cause__, e.__context__]
    return "\n".join(parts)


def cli(*args: str) -> str:
    env = {"COLUMNS": "250", "PERSISTENCY_URL": "", "PERSISTENCY_ENCRYPTION_KEY": ""}
    r = CliRunner().invoke(app, list(args), env=env)
    return f"[exit {r.exit_code}]\n{r.stdout}\n{r.stderr}"


def provoke_errors(s: Planted, storage_url: str, redis_port: int) -> list[BaseException]:
    """Library errors whose inputs carry secrets: each is logged with ``logging.exception`` as users do."""
    caught: list[BaseException] = []
    attempts = [
        lambda: provider_from_url(f"redis://:{redis_password(s)}@127.0.0.1:{redis_port}/0").list_sessions(),
        lambda: provider_from_url(f"redis://app:{redis_password(s)}@127.0.0.1:{redis_port}/0").list_sessions(),
        lambda: provider_from_url(f"nosuchscheme://svc:{s(29, 's3cr')}/et#{s(29, 'x')}@h/x"),
        lambda: provider_from_url(f"redis://app:{s(30, 'auth')}@127.0.0.1:{redis_port}/0").list_sessions(),
    ]
    for attempt in attempts:
        try:
            attempt()
        except PersistencyError as exc:
            logging.getLogger("persistency.test").exception("storage failed")
            caught.append(exc)
    return caught


def stored_bytes(backend: str, url: str, request: pytest.FixtureRequest) -> bytes:
    """Every byte the backend holds, compressed values expanded; for SQLite the database and -wal
    files as they are on disk, and every column value of every table."""
    if backend == "sqlite":
        return b"\n".join(b"\n".join(_expanded(c)) for c in sqlite_values(url))
    return raw_bytes(backend, url, request)


def test_the_33_kinds_never_leak(
    storage_url: str, backend: str, request: pytest.FixtureRequest, logs: Logs, user_rule: None,
    redis_server: str,
) -> None:
    s = Planted()
    port = urlsplit(redis_server).port
    assert port is not None
    provider = provider_from_url(storage_url)
    user, manager = planted_chat(s)
    Persistency(provider, "planted", metadata={"purpose": "scan"}).attach(manager)
    user.initiate_chat(manager, message="solve it", silent=True)
    user2, manager2 = planted_chat(s, fail=True)
    Persistency(provider, "planted2").attach(manager2)
    with pytest.raises(Crash):
        user2.initiate_chat(manager2, message="solve it", silent=True)
    failed = provider.get_latest_checkpoint("planted2")
    assert failed is not None and failed.end_reason == "error" and "upstream said" in (failed.error or "")

    errors = provoke_errors(s, storage_url, port)
    assert len(errors) == 4, errors
    stored = stored_bytes(backend, storage_url, request).decode("utf-8", "replace")
    out = "\n".join([
        cli("sessions", "--url", storage_url),
        cli("sessions", "--url", storage_url, "--json"),
        *(cli("show", sid, "--url", storage_url) for sid in ("planted", "planted2")),
        *(cli("show", sid, "latest", "--url", storage_url) for sid in ("planted", "planted2")),
        *(cli("show", sid, "latest", "--url", storage_url, "--json") for sid in ("planted", "planted2")),
        *(cli("export", sid, "--url", storage_url) for sid in ("planted", "planted2")),
        cli("verify", "--url", storage_url),
        cli("verify", "--url", storage_url, "--json"),
        cli("sessions", "--url", f"redis://:{redis_password(s)}@127.0.0.1:{port}/0"),
        cli("sessions", "--url", f"redis://:{redis_password(s)}@127.0.0.1:1/0"),
        cli("show", "planted", "--url", f"nosuchscheme://svc:{s(29, 's3cr')}/et#{s(29, 'x')}@h/x"),
    ])
    chains = "\n".join(chain_text(e) for e in errors)
    log_text = "\n".join(logs.lines)

    # positive controls: each channel holds what it should, so a clean scan means something
    assert "solve it" in stored and "upstream said" in stored, "the scan does not see the stored transcript"
    assert out.count("solve it") >= 2 and "upstream said" in out and out.count("error: ") >= 3
    assert "Traceback" in log_text and "storage failed" in log_text and "****" in log_text
    assert "ProviderConfigError" in chains and "StorageUnavailableError" in chains
    assert "direct cause of the following exception" in chains and chains.count("Traceback") > len(errors)
    assert "redis://:****@127.0.0.1" in chains + out

    leaks = {channel: s.leaks(text) for channel, text in
             (("stored bytes", stored), ("CLI", out), ("logs", log_text), ("exception chains", chains))}
    assert leaks == {"stored bytes": [], "CLI": [], "logs": [], "exception chains": []}
    print(f"{backend}: {len(KINDS)} kinds, 0 found in {len(stored):,} stored characters (expanded), "
          f"{len(out):,} of CLI output, {len(logs.lines)} log records, {len(errors)} exception chains")


@pytest.mark.parametrize("password", ["pa/ss", "p#ss", "p?ss", "ab/cdef", "x@y/zz", "p@ss/x", "a:b/c", "xy:zz@w/v"])
def test_a_redis_password_with_url_delimiters_shows_not_even_its_first_letters(password: str) -> None:
    """Kind 30 in its short form: a parser's error quotes the part before the first delimiter, or
    redis-py connects to a piece of the password as if it were the host."""
    url = f"redis://:{password}@127.0.0.1:1/0"
    with pytest.raises(PersistencyError) as info:
        provider_from_url(url).list_sessions()
    messages = []
    e: BaseException | None = info.value
    while e is not None:
        messages += [str(e), repr(e.args)]
        e = e.__cause__ or e.__context__
    out = cli("sessions", "--url", url)
    assert "error: " in out and "****" in out
    assert password not in chain_text(info.value)
    pieces = [p for p in re.split(r"[/?#@:]", password) if p]
    for shown in (*messages, out):
        assert password not in shown
        for piece in pieces:
            assert not re.search(rf"(?<![A-Za-z0-9]){re.escape(piece)}(?![A-Za-z0-9])", shown), (piece, shown)
