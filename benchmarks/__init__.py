"""Benchmarks that compare two ways of doing the same work in one run and print their ratio.

`python -m stability.bench gpu` times the trial engine against a plain PyTorch loop on the same
models (images/s and model FLOP utilisation); `overhead` and `fused` run the scripts in
`benchmarks/`; `all` runs each and prints their ratios together. Importing this package imports
neither torch nor Ray: the GPU comparison needs only torch, timm and the engine's own imports.
"""
