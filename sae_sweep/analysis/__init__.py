"""Analysis: dictionaries -> MCS -> nulls, EMD, matching -> per-feature facts -> findings -> report.

    collect.py                       every dictionary of a layer, from a folder or W&B, by variant
    settings.py                      AnalysisConfig (conf/analyze.yaml's ``analysis`` node)
    mcs.py, nulls.py                 max cosine similarity and pairings; the exact and sampled random baselines
    stats.py, mixture.py             EMD and bootstrap intervals; the null + Beta fit that counts real features
    inference.py                     the tests Findings are worded by: score intervals, permutation test, Fisher r
    note.py                          the note's numbers (Figures 3-12)
    features.py, seeds.py            per-feature facts (liveness, movement, matching, split); across seeds
    baselines.py, lowmode.py         anisotropic nulls, ground truth, controls; the low mode against two nulls
    extras.py                        everything beyond the note, gathered
    budget.py                        the same measures along the training budget (the dictionaries' snapshots)
    findings.py, claims.py           sentences chosen by comparisons in code; the note's claims and the controls
    figures.py, figures_beyond.py    the figures, through matplotlib's object API
    report.py, job.py                the report folder; stage ``analyze``

Nothing here imports Lightning; dictionaries arrive through ``sae_sweep.dictionary``.
"""
