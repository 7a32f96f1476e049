"""The README's main command runs offline from a clean checkout: the example, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mathchat_example_runs_offline(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "PERSISTENCY_URL")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "mathchat_with_checkpoints.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "offline (scripted model)" in out
    assert "crashed: the process died while the solver was thinking" in out
    assert "000001-0000004-end1    run-000001  step  4  <- run end: error" in out
    assert "run run-000001 ended: termination_message after 6 rounds" in out
    assert "9. checker: Verified: 200 * 201 / 2 = 20100. SOLUTION_FOUND: 20100" in out
    assert "000002-0000009-end1    run-000002  step  9  <- run end: termination_message" in out
    assert "9 messages restored" in out
    assert out.count("5. solver:") == 1  # the crashed turn was produced once, after the restart
    assert (tmp_path / ".persistency" / "mathchat-demo" / "checkpoints").is_dir()  # the default store


def test_support_desk_pattern_example_resumes_exactly_after_a_sigkill(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "PERSISTENCY_URL")}
    script = [sys.executable, str(ROOT / "examples" / "support_desk_pattern.py"), "--dir", str(tmp_path)]
    proc = subprocess.run(script, cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "child exit code -9" in out
    for what in ("transcript", "histories", "context", "chat_history"):
        assert f"   {what}: identical" in out
    assert "model calls: 4 (crashed + resumed) vs 4 (reference)" in out
    assert "'refunds': 1, 'classified': 1, 'issue_type': 'billing', 'refunded': 30" in out
    assert "runs stored: ['run-000001', 'run-000002']" in out
    assert out.rstrip().endswith("resumed exactly")
