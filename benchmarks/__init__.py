"""Benchmarks that compare two ways of doing the same work in one run and print their ratio.

`python -m benchmarks {gpu,overhead,fused,orchestration,fused_sweep,cifar_projection,all}` runs
them (from a checkout or after `pip install .`); each of `overhead`, `fused`, `orchestration`,
`fused_sweep` and `cifar_projection` is also a module of its own (`python -m
benchmarks.trial_overhead` and so on).

- gpu (`benchmarks.gpu`): the trial engine against a plain PyTorch loop on the same models:
  images/s and model FLOP utilisation.
- overhead (`benchmarks.trial_overhead`): per-trial overhead, `stability.sweep` against a loop of
  `stability.train` processes.
- fused (`benchmarks.fused_trials`): K configs of one model trained in one fused forward/backward
  against the same K trials one by one.
- orchestration (`benchmarks.orchestration_share`): a sweep's wall time against its trials' own
  work, for trials of about one minute.
- fused_sweep (`benchmarks.fused_sweep`): whole sweeps with `resources.fused_trials` against one
  trial per process.
- cifar_projection (`benchmarks.cifar_projection`): CIFAR-10-shaped epochs of fused groups of each
  model of the `cifar10_lr_wd` study on synthetic data, projected to that study's cost.
- `bash benchmarks/gpu_check.sh OUT_DIR`: the prepared GPU check (`benchmarks.gpu_check`): the
  CUDA tests, `gpu`, `fused` and `cifar_projection` in at most 5 minutes, with a JSON and a
  Markdown summary of every figure against its target.
- `python -m benchmarks.checkpoint_cost`: the default study's trials with mid-trial checkpoints
  off, at the default interval and at every epoch, in one process.

Importing this package or its CLI imports neither torch nor Ray: the GPU comparison needs only
torch, timm and the trial engine's own imports.
"""
