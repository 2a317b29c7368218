"""TCP forwarder that adds a fixed latency in each direction.

    with DelayProxy("127.0.0.1", broker.port, delay_ms=25) as p:   # +50 ms RTT
        connect to 127.0.0.1:p.port instead

Every chunk read from one side is written to the other side `delay_ms` after
it arrived, independently of the chunks before it (a pipe with latency, not
stop-and-wait), so throughput is what the peers manage, minus nothing: at most
`max_buffer` bytes per direction wait in the proxy (back-pressure beyond
that). Order is preserved; a half-close (EOF) is forwarded after the same
delay; a reset or error on either side closes both. Payload is never looked
at, so TLS passes through unchanged. TCP_NODELAY on both legs.

Runs an asyncio loop in a daemon thread; `.set_delay(ms)` works at runtime
(a smaller delay never reorders: a chunk is never sent before an earlier one).

Script use (foreground, Ctrl-C/SIGTERM to stop):
    /usr/bin/python3 tests/harness/delayproxy.py --listen PORT --target HOST:PORT --delay-ms N
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and sys.path and \
        os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]  # run as a script: harness/token.py must not shadow stdlib token

import argparse
import asyncio
import signal
import socket
import threading
from typing import Optional, Set

__all__ = ["DelayProxy"]

CHUNK = 256 * 1024


class _Pipe:
    """One direction: reader -> (due time, bytes) queue -> writer."""

    def __init__(self, proxy: "DelayProxy", reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter):
        self.proxy, self.reader, self.writer = proxy, reader, writer
        self.queue: asyncio.Queue = asyncio.Queue()
        self.buffered = 0
        self.room = asyncio.Event()
        self.room.set()
        self.last_due = 0.0

    async def read_side(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self.room.wait()
                data = await self.reader.read(CHUNK)
                due = max(loop.time() + self.proxy.delay, self.last_due)
                self.last_due = due
                self.queue.put_nowait((due, data))  # b"" = EOF
                if not data:
                    return
                self.buffered += len(data)
                self.proxy._bytes += len(data)
                if self.buffered >= self.proxy.max_buffer:
                    self.room.clear()
        except (ConnectionError, OSError):
            self.queue.put_nowait((0.0, None))  # abort

    async def write_side(self) -> bool:
        """True when the direction ended with a clean EOF."""
        loop = asyncio.get_running_loop()
        while True:
            due, data = await self.queue.get()
            if data is None:
                return False
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                try:
                    if self.writer.can_write_eof():
                        self.writer.write_eof()
                except (ConnectionError, OSError):
                    return False
                return True
            try:
                self.writer.write(data)
                await self.writer.drain()
            except (ConnectionError, OSError):
                return False
            self.buffered -= len(data)
            if self.buffered < self.proxy.max_buffer:
                self.room.set()


class DelayProxy:
    """See module doc. `.port` is the listening port (free one unless
    `listen_port` is given); `.connections` counts accepted clients."""

    def __init__(self, target_host: str, target_port: int, *, delay_ms: float,
                 listen_host: str = "127.0.0.1", listen_port: int = 0,
                 max_buffer: int = 64 * 1024 * 1024):
        self.target_host, self.target_port = target_host, int(target_port)
        self.listen_host = listen_host
        self.port = int(listen_port)
        self.delay = float(delay_ms) / 1000.0
        self.max_buffer = int(max_buffer)
        self.connections = 0
        self.failed_connects = 0
        self._bytes = 0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._server: Optional[asyncio.AbstractServer] = None
        self._tasks: Set[asyncio.Task] = set()
        self._writers: Set[asyncio.StreamWriter] = set()

    # -- public --------------------------------------------------------------
    @property
    def delay_ms(self) -> float:
        return self.delay * 1000.0

    def set_delay(self, ms: float) -> None:
        """New one-way delay for chunks read from now on."""
        self.delay = float(ms) / 1000.0

    @property
    def bytes_forwarded(self) -> int:
        return self._bytes

    @property
    def address(self) -> str:
        return f"{self.listen_host}:{self.port}"

    def start(self) -> "DelayProxy":
        if self._thread:
            return self
        ready = threading.Event()
        error = []

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(asyncio.start_server(
                    self._client, self.listen_host, self.port, reuse_address=True,
                    backlog=128))
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as e:  # bind failure
                error.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=run, name="delayproxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        if error:
            self._thread = None
            raise error[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if not thread:
            return
        if loop and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._thread = None
        self._loop = None

    close = stop

    def __enter__(self) -> "DelayProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Script mode: run in this thread until SIGINT/SIGTERM."""
        self.start()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *a: stop.set())
        signal.signal(signal.SIGINT, lambda *a: stop.set())
        while not stop.wait(1):
            pass
        self.stop()

    # -- internals -----------------------------------------------------------
    async def _shutdown(self) -> None:
        if self._server:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    @staticmethod
    def _nodelay(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    async def _client(self, c_reader: asyncio.StreamReader,
                      c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self.connections += 1
        self._writers.add(c_writer)
        t_writer = None
        children = []
        try:
            self._nodelay(c_writer)
            try:
                t_reader, t_writer = await asyncio.open_connection(
                    self.target_host, self.target_port, limit=CHUNK)
            except OSError:
                self.failed_connects += 1
                c_writer.transport.abort()
                return
            self._writers.add(t_writer)
            self._nodelay(t_writer)
            up = _Pipe(self, c_reader, t_writer)
            down = _Pipe(self, t_reader, c_writer)
            children = [asyncio.ensure_future(up.read_side()),
                        asyncio.ensure_future(down.read_side())]
            pending = {asyncio.ensure_future(up.write_side()),
                       asyncio.ensure_future(down.write_side())}
            children += pending
            while pending:
                done, pending = await asyncio.wait(pending,
                                                   return_when=asyncio.FIRST_COMPLETED)
                if any(not t.result() for t in done):
                    break  # reset/error on one side: drop both
        except asyncio.CancelledError:
            pass
        finally:
            for t in children:
                t.cancel()
            if children:
                try:
                    await asyncio.gather(*children, return_exceptions=True)
                except asyncio.CancelledError:
                    pass
            for w in (c_writer, t_writer):
                if w is not None:
                    self._writers.discard(w)
                    try:
                        w.close()
                    except Exception:
                        pass
            self._tasks.discard(task)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="TCP forwarder adding delay in each direction")
    ap.add_argument("--listen", required=True,
                    help="PORT or HOST:PORT to listen on (host default 127.0.0.1)")
    ap.add_argument("--target", required=True, help="HOST:PORT to forward to")
    ap.add_argument("--delay-ms", type=float, required=True, help="one-way delay in ms")
    args = ap.parse_args(argv)
    lhost, _, lport = args.listen.rpartition(":")
    thost, _, tport = args.target.rpartition(":")
    if not tport.isdigit() or not lport.isdigit():
        ap.error("ports must be numbers")
    proxy = DelayProxy(thost or "127.0.0.1", int(tport), delay_ms=args.delay_ms,
                       listen_host=lhost or "127.0.0.1", listen_port=int(lport))
    proxy.start()
    print(f"delayproxy {proxy.address} -> {proxy.target_host}:{proxy.target_port} "
          f"+{args.delay_ms:g} ms each way", flush=True)
    try:
        proxy.serve_forever()
    finally:
        proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
