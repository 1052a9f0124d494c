"""Built-in executors: ``local`` (this process; the default) and ``ray`` (a Ray cluster, ``pip install
'quantmatch[fleet]'``). Each module registers through :func:`quantmatch.sdk.hookspecs.register_executors`,
as a third-party executor (Dask, Slurm ...) would."""
