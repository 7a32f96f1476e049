"""An S3 server for the tests: moto in server mode on a free loopback port, over real HTTP.

The session fixture ``s3_server`` starts moto's WSGI app in a thread (port 0, so the OS picks a
free port and nothing races for it), creates a bucket, and sets dummy AWS credentials in the
environment for the test session only (restored afterwards; shared config files are pointed
away so no real profile is read). Every URL the fixtures hand out names the endpoint
explicitly, and ``AWS_ENDPOINT_URL_S3`` points at moto too, so nothing ever reaches AWS.

Two things the tests need from the server that moto does not do on its own:

- Real S3 checks ``If-None-Match: *`` and stores the object in one atomic step; moto checks and
  then stores, so two of its threads can both pass the check. The app is wrapped in a lock so
  that requests are served one at a time, which gives the atomicity real S3 has.
- Tests count requests (``S3Server.requests``) to prove that a save costs the same at step 1,000
  as at step 10; the wrapper logs each request's method, path and query.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pytest

BUCKET = "persistency-tests"
REGION = "us-east-1"


@dataclass(frozen=True)
class Request:
    """One HTTP request the server answered."""

    method: str
    path: str
    query: str
    range: str = ""


@dataclass
class S3Server:
    """A running moto server: its endpoint, its bucket, and a log of the requests it served."""

    endpoint: str
    bucket: str
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, prefix: str | None = None) -> str:
        """An ``s3://`` URL on this server, under ``prefix`` (a fresh unique one by default)."""
        prefix = prefix or f"t-{uuid.uuid4().hex}"
        return f"s3://{self.bucket}/{prefix}?endpoint_url={self.endpoint}&region={REGION}"

    def mark(self) -> int:
        """The current length of the request log, to count the requests made after it."""
        with self.lock:
            return len(self.requests)

    def since(self, mark: int, contains: str = "") -> list[Request]:
        """The requests served after ``mark`` whose path or query contains ``contains``."""
        with self.lock:
            return [r for r in self.requests[mark:] if contains in r.path or contains in unquote(r.query)]

    def client(self) -> Any:
        """A plain botocore client on this server (for tests that damage or inspect objects)."""
        import botocore.session

        return botocore.session.get_session().create_client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )

    def clear(self, prefix: str) -> None:
        """Delete every object under ``prefix`` (moto lists a bucket in time linear in all its keys)."""
        client = self.client()
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{prefix}/"):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
        finally:
            client.close()


def _serialized(app: Callable[..., Iterable[bytes]], server: S3Server) -> Callable[..., Iterable[bytes]]:
    """Serve one request at a time (atomic conditional writes, as on real S3) and log each one."""
    serve_lock = threading.Lock()

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with server.lock:
            server.requests.append(
                Request(environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""),
                        environ.get("QUERY_STRING", ""), environ.get("HTTP_RANGE", ""))
            )
        with serve_lock:
            return list(app(environ, start_response))

    return wrapped


_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/persistency-tests/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/persistency-tests/aws-credentials",
}
_UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN",
          "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
          "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server on 127.0.0.1 (free port), with a bucket and dummy credentials in the env."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(logging.getLogger("werkzeug"), "level", logging.WARNING)  # one line per request otherwise
        for name, value in _ENV.items():
            mp.setenv(name, value)
        for name in _UNSET:
            mp.delenv(name, raising=False)
        placeholder = S3Server(endpoint="", bucket=BUCKET)
        app = _serialized(DomainDispatcherApplication(create_backend_app), placeholder)
        httpd = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
        placeholder.endpoint = f"http://127.0.0.1:{httpd.server_port}"
        # a safety net: a client built without an endpoint still talks to moto, never to AWS
        mp.setenv("AWS_ENDPOINT_URL", placeholder.endpoint)
        mp.setenv("AWS_ENDPOINT_URL_S3", placeholder.endpoint)
        thread = threading.Thread(target=httpd.serve_forever, name="moto-s3", daemon=True)
        thread.start()
        try:
            client = placeholder.client()
            client.create_bucket(Bucket=BUCKET)
            client.close()
            yield placeholder
        finally:
            httpd.shutdown()
            thread.join(timeout=10)
            with contextlib.suppress(Exception):
                httpd.server_close()


@pytest.fixture
def s3_url(s3_server: S3Server) -> Iterator[str]:
    """A fresh ``s3://`` URL: the test bucket, a unique prefix, the loopback endpoint in its query.

    The prefix is emptied after the test, so the server stays small and fast.
    """
    prefix = f"t-{uuid.uuid4().hex}"
    yield s3_server.url(prefix)
    s3_server.clear(prefix)
