"""The GPU engine: NVML backends (the real library, a replay of a real H200, none), the
collection that serves per-GPU metrics without ever blocking the event loop, and GPU
health scoped to this runner's GPUs. It never imports HTTP or the install engine; the
daemon owns its lifecycle."""
