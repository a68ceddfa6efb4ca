"""Prefect's temporary API, started while TensorFlow is still being imported.

With no PREFECT_API_URL, a flow run's first call starts Prefect's temporary server: a process of
its own that takes seconds to answer (longer on its first start, which builds its database).
Started before TensorFlow is imported, it gets ready on another core meanwhile; the flow run then
finds it running (Prefect keeps one per process).
"""

import threading
from collections.abc import Callable


def start_early() -> Callable[[], None]:
    """Start the temporary server if this process will need one; returns a function that waits
    until it answers (a failure to start is raised again by the flow run's own attempt)."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return lambda: None
    from prefect.server.api.server import SubprocessASGIServer

    starting = threading.Thread(
        target=_start, args=(SubprocessASGIServer(),), name="prefect-api-start", daemon=True
    )
    starting.start()
    return starting.join


def _start(server) -> None:
    try:
        server.start()
    except Exception:  # the flow run starts it again, and reports why it cannot
        return
