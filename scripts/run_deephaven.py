"""Runs the embedded Deephaven server (PyPI `deephaven-server`) until SIGTERM/SIGINT.

The package's own `deephaven server` command waits on stdin and exits when
stdin is closed (as in CI), so dhbus starts the server with this launcher.
Usage: python run_deephaven.py HOST PORT [JVM_ARG ...]
"""
import signal
import sys
import threading

from deephaven_server import Server


def main() -> None:
    host, port, jvm_args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    server = Server(host=host, port=port, jvm_args=jvm_args)
    server.start()
    print(f"deephaven ready on {host}:{port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()


if __name__ == "__main__":
    main()
