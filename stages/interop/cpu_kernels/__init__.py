"""Pure-PyTorch CPU stand-ins for the CUDA kernel packages nanotron imports (``flash_attn``, ``grouped_gemm``).

The nanotron backend's CPU mode puts this folder first on ``PYTHONPATH`` so that nanotron's trainer imports and
runs on a machine without CUDA: for checking a cluster job on a laptop before it queues, and for testing the
backend against the torch backend in CI. They follow the documented semantics of the functions they replace,
written from those descriptions; they are correct and slow. Only what nanotron's Qwen2 training path calls is
implemented; the rest raises ``NotImplementedError`` naming the feature (ring attention, KV-cache decoding).
"""
