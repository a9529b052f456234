"""An sd_notify socket: what a daemon tells systemd, collected."""

import os
import shutil
import socket
import tempfile
import threading
import time

class NotifySocket:
    """An AF_UNIX datagram socket to pass as NOTIFY_SOCKET; collects what is sent."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="todod-notify-")
        os.chmod(self.dir, 0o755)
        self.path = os.path.join(self.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o777)
        self.sock.settimeout(0.1)
        self._msgs = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._closed:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            with self._cond:
                self._msgs.append(data.decode("utf-8", "replace"))
                self._cond.notify_all()

    def messages(self):
        with self._cond:
            return list(self._msgs)

    def wait_for(self, substr, timeout, since=0):
        """True once a datagram (index >= since) containing substr has arrived."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self._msgs[since:]:
                    if substr in m:
                        return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)

    def index(self, substr, since=0):
        """Index of the first datagram (>= since) containing substr, or -1."""
        with self._cond:
            for i, m in enumerate(self._msgs[since:], since):
                if substr in m:
                    return i
        return -1

    def close(self):
        self._closed = True
        try:
            self.sock.close()
        except OSError:
            pass
        self._thread.join(1)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
