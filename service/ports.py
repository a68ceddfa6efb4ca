"""Listening sockets, with a clear error when the port is taken."""

import socket


class PortInUseError(RuntimeError):
    pass


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket; PortInUseError names the address if it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # asyncio sets TCP_NODELAY on accepted connections only when the listening socket says it is
    # TCP; without it every small answer waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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
