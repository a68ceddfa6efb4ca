import socket

import pytest

from service.ports import PortInUseError, ensure_free, listen


def test_listening_sockets_are_tcp_so_asyncio_turns_off_nagle():
    # asyncio sets TCP_NODELAY on accepted connections only for IPPROTO_TCP listeners.
    sock = listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_a_taken_port_is_named_in_the_error():
    holder = listen("127.0.0.1", 0)
    port = holder.getsockname()[1]
    try:
        with pytest.raises(PortInUseError, match=f"cannot listen on 127.0.0.1:{port}: "):
            ensure_free("127.0.0.1", port)
    finally:
        holder.close()
    ensure_free("127.0.0.1", port)
