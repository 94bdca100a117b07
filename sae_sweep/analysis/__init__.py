"""Analysis: dictionaries -> measures -> report sections -> files (and W&B).

    collect.py     every dictionary of a layer, from a folder or W&B, by variant
    partial.py     a partial sweep: which dictionaries can be compared, and a line for each left out
    settings.py    AnalysisConfig (conf/analyze.yaml's ``analysis`` node)
    measures/      pure functions from dictionaries to numbers and rows (MCS, nulls, per-feature facts, ...)
    report/        sections that draw and write those rows, and the document that orders them
    job.py         stage ``analyze``: collect -> measures -> report -> files and W&B
    wandb_run.py   the analysis on W&B: figures, typed tables, MCS histograms, per-dictionary results on the runs
    question.py    one dictionary's or one feature's verdicts, without the report (``analysis.only``, ``feature_table``)
    products.py    what the analysis hands on beyond its report: stable cores (core/) and latent_scores.csv
    stable_core.py a stable-core folder (type ``sae-core``): its schema, writing it with its SAELens copy, reading it

Nothing here imports Lightning; dictionaries arrive through ``sae_sweep.dictionary``.
"""
