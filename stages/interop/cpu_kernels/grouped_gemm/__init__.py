"""CPU stand-in for ``grouped_gemm`` (see :mod:`stages.interop.cpu_kernels`): gmm, permute, unpermute."""
