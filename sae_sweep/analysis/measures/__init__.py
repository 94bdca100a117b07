"""Measures: pure functions from dictionaries (and activations, true features, snapshots) to numbers and rows.

    mcs.py                  max cosine similarity, Hungarian matching, row-wise cosines
    nulls.py                the exact analytic null of footnote 2; sampled and anisotropic random dictionaries
    stats.py, inference.py  EMD, bootstrap intervals, shared fraction; score intervals, permutation test, Fisher r
    mixture.py              the two-component fit (a null + a learned Beta) that counts real features
    pairwise.py             the note's numbers: MCS of every pair, random baselines, EMD tables, counts, correlations
    features.py             per-feature facts against the reference: liveness, movement, split, matching
    seeds.py                across seeds: shared fraction, PW-MCC, seed-to-seed spread
    low_mode.py             the low mode against two nulls (permutation tests)
    anisotropic.py          nulls with the activations' geometry
    ground_truth.py         synthetic data against its true features
    controls.py             a variant's rows to set beside the main run's
    budget.py               the same measures along the training budget (snapshots)
    architectures.py        architectures side by side: two modes, cross-seed stability
    null_tail.py            the exact null's tail with an effective (K, M) fitted to sampled null MCS values
    verdicts.py             which features are real, one by one: matches, p, q, replications, verdicts
    verdict_checks.py       the verdicts against the truth (synthetic data) and beside the note's split
    calibration.py          each size's match floor and estimated recall, from a parametric bootstrap
    row_null.py             the verdicts on dictionaries of random activation rows, beside the learned ones'
    families.py             feature families across the sizes of a seed: splits, vanished and new features
    core.py                 the stable core of a size: the features every seed found, as one dictionary
    variant.py              one variant's measures gathered (``measure_variant``, ``AnalysedRun``)

Nothing here draws or imports matplotlib; report/ does. Only calibration.py writes a file: its result, into the
cache (it costs minutes of SAE training).
"""
