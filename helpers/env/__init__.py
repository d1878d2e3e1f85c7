"""Is this machine ready: Python and packages, GPU, CUDA vs nvcc, bitsandbytes, disk, model sources, shadowing.
"""
