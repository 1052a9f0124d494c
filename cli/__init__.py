"""The ``quantmatch`` command line (:func:`main`); one module per group of views beside it.

Start-up stays cheap: importing this package imports only the standard library; each command imports
what it needs. ``--help``, ``plugins``, ``devices``, ``registry``, ``explain`` and ``conformance``
never import torch, transformers, textual or ray.
"""

from __future__ import annotations

from quantmatch.cli.main import UsageError, build_parser, main

__all__ = ["UsageError", "build_parser", "main"]
