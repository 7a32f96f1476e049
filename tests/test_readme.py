"""The README runs: every Python block and every shell command in it that needs no cloud account.

Generic on purpose (several people edit the README): blocks are found by their fence, in order,
and run in one scratch folder, so a shell block may use what an earlier one made (the example's
session for the command-line block). Python blocks run as scripts in a subprocess; a block that
defines pytest tests runs under pytest in strict asyncio mode, as a user's suite would. Shell
commands run with bash, ``.venv/bin/`` pointing at this interpreter's environment; the S3 bucket and
the Redis server the README names are replaced by the suite's own loopback servers. What is not run
is listed in `SKIP` with the reason, matched by a substring of the command.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BIN = Path(sys.executable).parent

#: substring of a shell command -> why it is not run here
SKIP: dict[str, str] = {
    "python3 -m venv": "creates and fills a virtual environment: .ci/run does exactly this",
    "pip install": "installs packages: this environment has them (.ci/run installs the extras)",
    "-m pytest": "runs the suite that runs this test (.ci/run runs it)",
    "ruff check": "the lint step of .ci/run",
    "bin/mypy": "the type-check step of .ci/run",
    "mkdocs build": "the docs step of .ci/run",
    "benchmarks.run": "a long benchmark (docs/benchmarks.md)",
    "s3://my-bucket": "needs an AWS account",
    "127.0.0.1:6379": "the machine's own Redis is off limits; the suite starts its own",
}
#: a server the README names -> the suite's own server that stands in for it (fixture, pattern):
#: the S3 bucket becomes a prefix on the loopback moto server, the Redis the suite's redis-server
STAND_IN_SERVERS: dict[str, str] = {
    "s3_server": r"s3://my-bucket/[^'\"\s]*",
    "redis_server": r"redis://127\.0\.0\.1:6379/0",
}
#: substring of a Python block -> code run before it, for a block that shows calls on names the text
#: around it defines (better: a block that stands alone)
PREAMBLES: dict[str, str] = {
    "provider.save_checkpoint(checkpoint)": (
        "from persistency import provider_from_url\n"
        "from persistency.testing import make_checkpoint\n"
        "provider = provider_from_url('memory://readme-contract')\n"
        "checkpoint = make_checkpoint('conv-42', 1)\n"
        "session_id, checkpoint_id = checkpoint.session_id, checkpoint.checkpoint_id\n"
    ),
}
#: files a block imports that stand for the reader's own code
STAND_INS = {
    "my_provider.py": (
        '"""Stands for the reader\'s provider in the README\'s conformance snippet."""\n'
        "from providers.filesystem import FilesystemStorageProvider as MyProvider\n\n"
        '__all__ = ["MyProvider"]\n'
    ),
}


@dataclass
class Block:
    lang: str
    text: str
    line: int

    @property
    def id(self) -> str:
        return f"{self.lang}@README.md:{self.line}"


def blocks(lang: str) -> list[Block]:
    """The README's fenced blocks of ``lang``, in order, with the line each starts on."""
    out = []
    for m in re.finditer(r"^```(\w+)[^\n]*\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M):
        if m.group(1) == lang:
            out.append(Block(lang, m.group(2), README.read_text(encoding="utf-8")[: m.start()].count("\n") + 1))
    return out


def commands(block: Block) -> list[str]:
    """The shell commands of a block: continuation lines joined, comments and blank lines left out."""
    joined = block.text.replace("\\\n", " ")
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def skip_reason(segment: str) -> str | None:
    return next((why for key, why in SKIP.items() if key in segment), None)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the whole README, with the repository's example at hand as in a checkout."""
    root = tmp_path_factory.mktemp("readme")
    (root / "examples").symlink_to(ROOT / "examples")
    for name, text in STAND_INS.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "PERSISTENCY_URL", "PERSISTENCY_ENCRYPTION_KEY", "PYTEST_ADDOPTS")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["COLUMNS"] = "200"
    return env


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def test_the_readme_has_blocks_to_run() -> None:
    assert blocks("python") and blocks("bash")


@pytest.mark.parametrize("block", blocks("python"), ids=lambda b: b.id)
def test_python_block_runs(block: Block, scratch: Path) -> None:
    name = f"readme_block_{block.line}.py"
    is_suite = re.search(r"^(class Test|def test_|async def test_)", block.text, re.M) is not None
    path = scratch / (f"test_{name}" if is_suite else name)
    preamble = "".join(code for key, code in PREAMBLES.items() if key in block.text)
    path.write_text(preamble + block.text, encoding="utf-8")
    if is_suite:
        proc = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "asyncio_mode=strict",
                     "-W", "error::pytest.PytestUnraisableExceptionWarning", str(path)], scratch)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert " passed" in proc.stdout and " failed" not in proc.stdout
    else:
        proc = _run([sys.executable, str(path)], scratch)
        assert proc.returncode == 0, proc.stderr[-3000:]


def _stand_in(request: pytest.FixtureRequest, fixture: str) -> str:
    server = request.getfixturevalue(fixture)
    if fixture == "s3_server":
        return str(server.url(f"readme-{uuid.uuid4().hex}"))
    return str(server)


def _shell_cases() -> list[tuple[str, str]]:
    return [(f"README.md:{b.line}#{i}", cmd) for b in blocks("bash") for i, cmd in enumerate(commands(b), 1)]


@pytest.mark.parametrize(("where", "command"), _shell_cases(), ids=[w for w, _ in _shell_cases()])
def test_shell_command_runs(where: str, command: str, scratch: Path, request: pytest.FixtureRequest) -> None:
    for fixture, pattern in STAND_IN_SERVERS.items():
        if re.search(pattern, command):
            command = re.sub(pattern, lambda _m, f=fixture: _stand_in(request, f), command)
    segments = [s.strip() for s in command.split("&&")]
    runnable = [s for s in segments if skip_reason(s) is None]
    if not runnable:
        pytest.skip("; ".join(sorted({str(skip_reason(s)) for s in segments})))
    for segment in runnable:
        line = segment.replace(".venv/bin/", f"{shlex.quote(str(BIN))}/")
        proc = _run(["bash", "-c", line], scratch)
        assert proc.returncode == 0, f"{where}: {segment}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
