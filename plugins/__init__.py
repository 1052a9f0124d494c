"""Built-in quantmatch plugins: device families, quantization methods and backends.

Each module implements the hooks of :mod:`quantmatch.sdk.hookspecs` exactly as a third-party plugin would.
"""
