"""One boto3 client factory for every S3 endpoint (AWS, MinIO, SeaweedFS), with bounded retries,
multipart transfers and errors that name the endpoint/bucket/key but never a credential."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError

from simsiam.errors import StorageError
from simsiam.storage.retry import OutageTooLong, with_retries

TRANSFER = TransferConfig(multipart_threshold=64 * 2**20, multipart_chunksize=16 * 2**20, max_concurrency=4)


@dataclass
class S3Settings:
    """Where objects live. Credentials come from the standard AWS chain (env, profile, IAM role)
    unless given here; they are never part of the run config, so never logged as params."""

    endpoint_url: str | None = None
    bucket: str = "data"
    region: str = "us-east-1"
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    max_attempts: int = 3
    connect_timeout: float = 3.0
    read_timeout: float = 30.0
    outage_budget_s: float = 120.0  # how long an endpoint reached before may stay unreachable (retry.py)

    @property
    def where(self) -> str:
        return self.endpoint_url or "AWS S3"


class ObjectStore:
    """A bucket on one endpoint. Counts the PUT requests it sends (`puts`), which the staging
    idempotence check and the benchmarks read. Once the endpoint has answered, an operation rides
    through its outages for `settings.outage_budget_s`; before that, a wrong or stopped endpoint fails
    in seconds (Prefect's client draws the same line)."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.puts = 0
        cfg = BotoConfig(retries={"max_attempts": settings.max_attempts, "mode": "standard"},
                         connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout,
                         request_checksum_calculation="when_required", response_checksum_validation="when_required",
                         s3={"addressing_style": "path"})
        session = boto3.session.Session(aws_access_key_id=settings.access_key,
                                        aws_secret_access_key=settings.secret_key, region_name=settings.region)
        self.client = session.client("s3", endpoint_url=settings.endpoint_url, config=cfg)
        for op in ("PutObject", "CreateMultipartUpload"):
            self.client.meta.events.register(f"before-call.s3.{op}", self._count_put)

    def _count_put(self, **_: Any) -> None:
        self.puts += 1

    def _call(self, call):
        """`call()` on this endpoint: retried through an outage once the endpoint has answered before."""
        budget = self.settings.outage_budget_s if self.settings.where in _REACHED else 0.0
        try:
            out = with_retries(call, _transient, budget, f"S3 endpoint {self.settings.where}")
        except OutageTooLong as exc:
            raise exc.cause from None
        except ClientError:
            _REACHED.add(self.settings.where)  # it answered (404, 403...): it is there
            raise
        _REACHED.add(self.settings.where)
        return out

    def _error(self, action: str, key: str | None, exc: Exception) -> StorageError:
        where = f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"
        if _transient(exc):
            waited = (f"for {self.settings.outage_budget_s:.0f} s (storage.outage_budget_s)"
                      if self.settings.where in _REACHED else f"after {self.settings.max_attempts} attempts")
            return StorageError(f"cannot reach S3 endpoint {self.settings.where} ({action} {where}) {waited}; "
                                "is it running? (`simsiam up`) Re-running the same command continues where it stopped")
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "?")
            if code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "403", "Forbidden"):
                return StorageError(f"access denied by {self.settings.where} for {action} {where} ({code}): "
                                    "check the S3 credentials")
            if code in ("NoSuchBucket",):
                return StorageError(f"bucket {self.bucket!r} does not exist on {self.settings.where}")
            return StorageError(f"S3 {action} {where} on {self.settings.where} failed: {code}")
        return StorageError(f"S3 {action} {where} on {self.settings.where} failed: {type(exc).__name__}")

    # ---------------------------------------------------------------- operations

    def ensure_bucket(self) -> None:
        try:
            self._call(lambda: self.client.head_bucket(Bucket=self.bucket))
            return
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise self._error("head_bucket", None, exc) from None
        except BotoCoreError as exc:
            raise self._error("head_bucket", None, exc) from None
        try:
            self._call(lambda: self.client.create_bucket(Bucket=self.bucket))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise self._error("create_bucket", None, exc) from None
        except BotoCoreError as exc:
            raise self._error("create_bucket", None, exc) from None

    def put_bytes(self, key: str, data: bytes, metadata: dict[str, str] | None = None,
                  content_type: str = "application/octet-stream") -> None:
        extra = {"Metadata": metadata or {}, "ContentType": content_type}
        try:
            self._call(lambda: _unwrapped(lambda: self.client.upload_fileobj(
                io.BytesIO(data), self.bucket, key, ExtraArgs=extra, Config=TRANSFER)))
        except Exception as exc:  # noqa: BLE001 - s3transfer's own types too: one StorageError
            raise self._error("put", key, exc) from None

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._call(lambda: self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise StorageError(f"object s3://{self.bucket}/{key} not found on {self.settings.where}") from None
            raise self._error("get", key, exc) from None

    def head(self, key: str) -> dict | None:
        """Size and user metadata of an object, or None if it does not exist."""
        try:
            h = self._call(lambda: self.client.head_object(Bucket=self.bucket, Key=key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error("head", key, exc) from None
        except BotoCoreError as exc:
            raise self._error("head", key, exc) from None
        return {"size": h["ContentLength"], "metadata": h.get("Metadata", {}), "etag": h.get("ETag"),
                "last_modified": h.get("LastModified")}

    def list_prefixes(self, prefix: str) -> list[str]:
        """Immediate 'sub-folders' under prefix (which should end with '/')."""
        return [p["Prefix"] for page in self._pages(prefix, Delimiter="/") for p in page.get("CommonPrefixes", [])]

    def list_keys(self, prefix: str) -> Iterator[dict]:
        for page in self._pages(prefix):
            yield from page.get("Contents", [])

    def _pages(self, prefix: str, **extra: str) -> Iterator[dict]:
        """list_objects_v2 page by page, each page retried on its own (a long listing survives an outage)."""
        token: dict[str, str] = {}
        while True:
            try:
                page = self._call(lambda: self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix,
                                                                      **extra, **token))
            except (ClientError, BotoCoreError) as exc:
                raise self._error("list", prefix, exc) from None
            yield page
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}


_REACHED: set[str] = set()  # endpoints that answered in this process
RETRIED_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "500", "502", "503", "504"}


def _transient(exc: Exception) -> bool:
    """A dropped or refused connection, a timeout, or the server asking us to slow down."""
    if isinstance(exc, (BotoConnectionError, HTTPClientError, IncompleteReadError, ConnectionError)):
        return True
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code") in RETRIED_CODES
    return "Could not connect" in str(exc)


def _unwrapped(call):
    """s3transfer wraps a request's error in its own type: raise the botocore error instead."""
    try:
        return call()
    except (ClientError, BotoCoreError):
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised as its cause when it has one
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, (ClientError, BotoCoreError)):
            raise cause from None
        raise


def s3_endpoint(endpoint_url: str | None = None) -> str | None:
    """The S3 endpoint named by the argument or $SIMSIAM_S3_ENDPOINT/$AWS_ENDPOINT_URL_S3/$AWS_ENDPOINT_URL."""
    return endpoint_url or os.environ.get("SIMSIAM_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL_S3") \
        or os.environ.get("AWS_ENDPOINT_URL")


def settings_from_env(endpoint_url: str | None = None, bucket: str = "data", region: str | None = None,
                      state_path: str | Path | None = None, outage_budget_s: float = 120.0) -> S3Settings:
    """Endpoint from the argument or the environment (`s3_endpoint`); with none, the embedded SeaweedFS
    of the state dir and its generated credentials. Starts nothing: an entry point opened the
    embedded server before (`simsiam.steps.open_services`), or this is a one-line error."""
    endpoint = s3_endpoint(endpoint_url)
    region = region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    if endpoint:
        return S3Settings(endpoint_url=endpoint, bucket=bucket, region=region, outage_budget_s=outage_budget_s)
    from simsiam.services import running_s3, state_dir

    svc = running_s3(state_path)
    if svc is None:
        raise StorageError(f"no S3 endpoint: the embedded SeaweedFS of {state_dir(state_path)} is not running; "
                           "start it with `simsiam up`, or name a store with SIMSIAM_S3_ENDPOINT")
    return S3Settings(endpoint_url=svc.endpoint_url, bucket=bucket, region=region,
                      access_key=svc.access_key, secret_key=svc.secret_key, outage_budget_s=outage_budget_s)


def open_store(settings: S3Settings | None = None, **kwargs: Any) -> ObjectStore:
    store = ObjectStore(settings or settings_from_env(**kwargs))
    store.ensure_bucket()
    return store
