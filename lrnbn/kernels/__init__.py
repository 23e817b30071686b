"""Fused LRN kernels: lrn_cpu.cpp (built by lrnbn.fused on first use) and lrn_triton.py (CUDA)."""
