"""A fresh RabbitMQ vhost for one bench run (``rabbitmqctl`` on this machine), deleted after.

    url, drop_vhost = fresh_vhost(args.url)   # args.url: an existing vhost URL, or None
    try:
        ...
    finally:
        drop_vhost()                          # deletes only a vhost made here
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def fresh_vhost(url: str | None = None) -> tuple[str, Callable[[], None]]:
    """``url`` itself when given (nothing to delete); else a new vhost ``bench-<hex>`` that
    guest may use, and the function that deletes it."""
    if url is not None:
        return url, lambda: None
    vhost = f"bench-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    return f"amqp://guest:guest@127.0.0.1:5672/{vhost}", lambda: rabbitmqctl("delete_vhost",
                                                                              vhost)
