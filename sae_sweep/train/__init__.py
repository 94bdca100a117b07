"""Training: text -> tokens -> GPT -> activations -> SAE -> dictionary, one cached product per arrow.

    corpus.py, tokenizer.py, tokens.py     the text and its token cache
    gpt.py, gpt_module.py, pretrain.py     the tiny nanoGPT, its Lightning step, stage ``pretrain``
    ready_made.py                          the default pretraining's GPT, shipped in ../ready_made/ and installed
    harvest.py, synthetic.py               activation caches: a GPT's MLP, or generated with known features
    sae.py, sae_module.py, sae_stage.py    the SAE, its Lightning step, stage ``sae`` (one job of a sweep)
    sae_config.py, archs.py                the ``sae`` settings; the architectures, one object each (ReLU, TopK, ...)
    sparse_ops.py                          their kernels: exact top-k selections, JumpReLU's straight-through maths
    batches.py                             shuffled activation batches, several steps' stacked per Lightning batch
    sae_step.py                            the hand-written step: exact gradients, dense or over the active codes
    convergence.py, snapshots.py           held-out evaluations, decoder drift and the stopping rule; the budget axis
    jobs.py                                what a command asks for (the stages' jobs, the trainer's settings), free of
                                           Lightning, so a bad value is refused before it loads
    trainer.py, preemption.py, runs.py     the shared Trainer, clean stops on SIGTERM/requeue, a run's folder
    slurm.py                               hydra/launcher=slurm: resources from the trainer, checked against the nodes
    loggers.py, density.py                 CSV + guarded W&B logging; the one figure a job draws
    allocator.py                           glibc keeps large freed blocks (no page faults per CPU step)

Nothing here imports the analysis, scipy, or (until a job draws its histogram) matplotlib.
"""
