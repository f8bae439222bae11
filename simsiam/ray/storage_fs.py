"""Ray's checkpoint storage on S3 that rides through an outage. pyarrow's `S3FileSystem` takes a
`retry_strategy`, but drops it when pickled, and Ray pickles the filesystem to its controller and
workers, so they would retry for about a second. This handler is pickled instead (endpoint and
budget only: keys come from the AWS chain), builds its `S3FileSystem` in each process, and retries
every operation through `simsiam.storage.retry`. Writes are buffered and uploaded whole on close, so
an upload is retried whole: checkpoints are small files."""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from simsiam.storage.retry import OutageTooLong, with_retries

# The AWS SDK's error names for a refused or dropped connection, throttling and server errors, as Arrow
# quotes them (a key never holds these: they are upper-case with underscores).
TRANSIENT_MARKS = ("NETWORK_CONNECTION", "curlCode", "SLOW_DOWN", "SERVICE_UNAVAILABLE", "THROTTLING",
                   "INTERNAL_FAILURE", "REQUEST_TIMEOUT")


def _transient(exc: Exception) -> bool:
    return isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) \
        and any(mark in str(exc) for mark in TRANSIENT_MARKS)


class RetryingS3Handler(pafs.FileSystemHandler):
    def __init__(self, endpoint: dict[str, Any], budget_s: float) -> None:
        self.endpoint, self.budget_s, self._fs = endpoint, budget_s, None

    def __reduce__(self):
        return RetryingS3Handler, (self.endpoint, self.budget_s)

    def __eq__(self, other) -> bool:  # pyarrow compares two PyFileSystems' handlers with ==
        return isinstance(other, RetryingS3Handler) and other.endpoint == self.endpoint

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.endpoint.items())))

    @property
    def fs(self) -> pafs.S3FileSystem:
        # No background writes: our upload runs on one of Arrow's IO threads already (a PyFileSystem
        # stream closes there); a background upload waiting for another IO thread starved the pool (seen:
        # Tune's driver hung in copy_files).
        if self._fs is None:
            self._fs = pafs.S3FileSystem(**self.endpoint, background_writes=False)
        return self._fs

    def _retry(self, call):
        where = self.endpoint.get("endpoint_override", "AWS S3")
        try:
            return with_retries(call, _transient, self.budget_s, f"Ray's checkpoint storage ({where})")
        except OutageTooLong as exc:
            raise OSError(f"S3 endpoint {where} unreachable for {exc.waited_s:.0f} s: {exc.cause}") from None

    def get_type_name(self) -> str:
        return "simsiam-retrying-s3"

    def equals(self, other) -> bool:
        return self == other

    def normalize_path(self, path: str) -> str:
        return self.fs.normalize_path(path)

    def get_file_info(self, paths):
        return self._retry(lambda: self.fs.get_file_info(paths))

    def get_file_info_selector(self, selector):
        return self._retry(lambda: self.fs.get_file_info(selector))

    def create_dir(self, path: str, recursive: bool) -> None:
        self._retry(lambda: self.fs.create_dir(path, recursive=recursive))

    def delete_dir(self, path: str) -> None:
        self._retry(lambda: self.fs.delete_dir(path))

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._retry(lambda: self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok))

    def delete_root_dir_contents(self) -> None:
        raise OSError("refusing to delete the whole bucket space")

    def delete_file(self, path: str) -> None:
        self._retry(lambda: self.fs.delete_file(path))

    def move(self, src: str, dest: str) -> None:
        self._retry(lambda: self.fs.move(src, dest))

    def copy_file(self, src: str, dest: str) -> None:
        self._retry(lambda: self.fs.copy_file(src, dest))

    def _read(self, path: str) -> pa.Buffer:
        def read() -> pa.Buffer:
            with self.fs.open_input_stream(path) as stream:
                return stream.read_buffer()

        return self._retry(read)

    def open_input_stream(self, path: str):
        return pa.BufferReader(self._read(path))

    def open_input_file(self, path: str):
        return pa.BufferReader(self._read(path))

    def open_output_stream(self, path: str, metadata):
        return pa.PythonFile(_Upload(self, path, metadata), mode="w")

    def open_append_stream(self, path: str, metadata):
        raise OSError("S3 has no append")


class _Upload(io.BytesIO):
    """What a writer writes, uploaded whole (with retries) when it closes."""

    def __init__(self, handler: RetryingS3Handler, path: str, metadata) -> None:
        super().__init__()
        self.handler, self.path, self.metadata = handler, path, metadata

    def close(self) -> None:
        if self.closed:
            return
        data = self.getvalue()

        def upload() -> None:
            with self.handler.fs.open_output_stream(self.path, metadata=self.metadata) as out:
                out.write(data)

        try:
            self.handler._retry(upload)
        finally:
            super().close()


def retrying_s3(endpoint: dict[str, Any], budget_s: float) -> pafs.PyFileSystem:
    return pafs.PyFileSystem(RetryingS3Handler(endpoint, budget_s))
