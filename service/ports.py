"""Listening sockets, with a clear error when the port is taken."""

import socket


class PortInUseError(RuntimeError):
    pass


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket; PortInUseError names the address if it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as error:
        sock.close()
        raise PortInUseError(f"cannot listen on {host}:{port}: {error.strerror}") from error
    return sock


def ensure_free(host: str, port: int) -> None:
    listen(host, port).close()
