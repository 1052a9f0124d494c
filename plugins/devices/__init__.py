"""Built-in device families: NVIDIA, AMD ROCm, Apple Metal, x86 CPU and Arm CPU.

Each module registers one :class:`quantmatch.sdk.device.DeviceFamily` whose catalog is read from
``data/<family>.json`` and whose ``detect()`` probes the running machine without ever raising.
"""
