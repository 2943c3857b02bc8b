"""HTTP servers a test runs in a thread of its own: the web form's, or a stand-in for a workspace's API."""

from __future__ import annotations

import contextlib
import threading


@contextlib.contextmanager
def in_thread(server):
    """Serve until the block ends; yields the port."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def form_server(form):
    """`tuneforge ui`'s server for this form, on a free loopback port."""
    from tuneforge.web.server import make_server

    return in_thread(make_server(form))
