"""``python -m quantmatch.plugins.executors._ray_start start ...``: Ray's own ``ray start``, except that a loopback
``--node-ip-address`` stays loopback.

``ray start`` replaces ``127.0.0.1`` with the machine's routable address (``resolve_ip_for_localhost``) and its
servers then listen there. quantmatch promises that nothing listens beyond loopback unless the user gives an
address, so for a loopback node that one function keeps its argument. Everything else is Ray's CLI.
"""

from __future__ import annotations

import sys


def keep_loopback() -> None:
    """Make Ray keep a loopback node address (in this process: the node, or a driver connecting to one)."""
    import ray._private.services as services

    original = services.resolve_ip_for_localhost
    if getattr(original, "_quantmatch", False):
        return

    def resolve(host: str) -> str:
        return host if services.is_localhost(host) else original(host)  # type: ignore[attr-defined]

    resolve._quantmatch = True  # type: ignore[attr-defined]
    services.resolve_ip_for_localhost = resolve


def main() -> None:
    if "127.0.0.1" in sys.argv or "localhost" in sys.argv:
        keep_loopback()
    from ray.scripts.scripts import main as ray_main

    sys.argv = ["ray", *sys.argv[1:]]
    ray_main()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
