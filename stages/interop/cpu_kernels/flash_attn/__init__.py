"""CPU stand-in for ``flash_attn`` (see :mod:`stages.interop.cpu_kernels`): varlen attention, rotary, RMSNorm."""

# nanotron gates its flash_attn imports on the version; these functions follow the 2.6 API.
__version__ = "2.6.3"
