"""A local S3 endpoint for tests: moto's server mode on 127.0.0.1 in a background thread.

Usage in a test module:

```python
from s3_server import s3_store_url  # noqa: F401  (the fixture)

def test_something(s3_store_url):  # noqa: F811
    store = ReferenceStore(s3_store_url.url, storage_options=s3_store_url.storage_options)
```

The fixture also sets fake AWS credentials and ``AWS_ENDPOINT_URL`` in the environment (undone
after the test), so child processes started during the test reach the same server even with a
bare ``s3://bucket/prefix`` URL. Outside pytest use the `moto_s3` context manager.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

REGION = "us-east-1"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"


@dataclass(frozen=True)
class S3Location:
    """Where a test's S3 store lives. Picklable (plain strings only).

    Attributes:
        endpoint_url: ``http://127.0.0.1:<port>`` of the moto server.
        bucket: The bucket created for the test.
        prefix: Key prefix of the store inside the bucket.
    """

    endpoint_url: str
    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        """The store URL, ``s3://<bucket>/<prefix>``."""
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def storage_options(self) -> dict[str, Any]:
        """Keyword arguments for ``s3fs.S3FileSystem`` that reach the moto server."""
        return {
            "key": ACCESS_KEY,
            "secret": SECRET_KEY,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": REGION},
        }


@contextlib.contextmanager
def moto_s3(bucket: str | None = None, prefix: str = "lrtd-store") -> Iterator[S3Location]:
    """Run a moto S3 server on a free port of 127.0.0.1 with one bucket; stop it on exit.

    moto keeps its state per process, not per server: the state is reset on exit so that the
    next server starts empty.

    Args:
        bucket: Bucket name; a unique one by default.
        prefix: Key prefix returned in the location.

    Yields:
        The endpoint, bucket and prefix.
    """
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = ""
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        bucket = bucket or f"lrtd-test-{uuid.uuid4().hex[:12]}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        ).create_bucket(Bucket=bucket)
        yield S3Location(endpoint_url=endpoint, bucket=bucket, prefix=prefix)
    finally:
        if endpoint:
            with contextlib.suppress(Exception):
                request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
                urllib.request.urlopen(request, timeout=10).close()
        server.stop()
        with contextlib.suppress(Exception):
            import s3fs

            s3fs.S3FileSystem.clear_instance_cache()  # cached clients point at the dead port


@pytest.fixture
def s3_store_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Location]:
    """A fresh moto S3 server and bucket for one test; yields its `S3Location`."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SECURITY_TOKEN", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(name, "/nonexistent/lightning-rtd-test-aws-config")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with moto_s3() as location:
        monkeypatch.setenv("AWS_ENDPOINT_URL", location.endpoint_url)
        yield location
