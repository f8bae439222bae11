"""A TCP proxy that cuts a service off for a set time, for outage tests and drills: clients talk to
`proxy.url`, the proxy forwards to the real endpoint; `cut(seconds)` drops every open connection and
refuses new ones (as a killed server does) until the time is up, then forwards again."""

from __future__ import annotations

import socket
import threading
import time


class OutageProxy:
    def __init__(self, target: str) -> None:
        """`target`: the real endpoint, `http://host:port` or `host:port`."""
        host, _, port = target.split("://")[-1].rstrip("/").rpartition(":")
        self.target = (host, int(port))
        self.cuts: list[tuple[float, float]] = []  # (start, end) in time.time(), for the test's record
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._down_until = 0.0
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._open()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self, seconds: float) -> None:
        """Refuse and drop connections for `seconds`, then forward again (in the background)."""
        start = time.time()
        self.cuts.append((start, start + seconds))
        with self._lock:
            self._down_until = time.monotonic() + seconds
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
        for sock in [listener, *conns]:
            _close(sock)
        timer = threading.Timer(seconds, self._open)
        timer.daemon = True
        timer.start()

    def restore(self) -> None:
        """End the current cut now."""
        self._down_until = 0.0
        self._open()

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    def close(self) -> None:
        with self._lock:
            self._down_until = float("inf")
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
        for sock in [listener, *conns]:
            _close(sock)

    def _open(self) -> None:
        with self._lock:
            if self._listener is not None or time.monotonic() < self._down_until - 0.05:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut or closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                _close(sock)
                with self._lock:
                    self._conns.discard(sock)


def _close(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
