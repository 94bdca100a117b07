"""sae-sweep: which sparse-autoencoder features are real?

Data flows one way, through products on disk::

    text -> tokens -> GPT -> layer-L MLP activations -> SAE -> dictionaries  |  -> MCS, nulls, EMD -> report
    train/corpus  train/tokens  train/gpt  train/harvest  train/sae  dictionary   analysis/...   analysis/report

``sae_sweep.train`` makes the products and ``sae_sweep.analysis`` reads them; they meet only through the shared
modules beside them: ``store`` (versioned artifacts and their manifests), ``files`` (atomic builds, sha256 digests),
``outputs`` (the output folders a command replaces whole, and the check that it never replaces what it did not
write),
``dictionary`` (a dictionary folder and its config.json schema), ``dictionary_folders`` (the dictionaries under a
folder, none left out in silence), ``written_files`` (the registry of every file a stage writes, and who reads it
back), ``activations`` (the activation cache), ``truth``
(synthetic ground truth), ``tracking`` (W&B), ``lineage`` (exact W&B references, inputs recorded for runs made
offline), ``wandb_records`` (a ``.wandb`` record log read back), ``stages`` (the table of where a command's time
went) and ``errors``.
``rules`` lists every rule that relates two or more config keys (each with an example that breaks it) and ``memory``
estimates what an SAE run needs against what the machine has; ``config`` turns a Hydra config into either side's job,
and ``sweep_check`` builds and checks every job of a multirun before the first one starts;
``cli`` refuses a bad command line in one line before Hydra runs; ``config_docs`` writes the configuration reference
(docs/configuration.md) from ``conf/``.
``sync`` uploads offline runs and links their recorded inputs (``python -m sae_sweep.sync``).
``interop`` writes dictionaries as SAELens folders and reads other libraries' SAEs for the analysis.
"""

from sae_sweep.errors import ConfigError, DataError, Interrupted, SaeSweepError, TrainingError

__version__ = "0.1.0"
__all__ = ["ConfigError", "DataError", "Interrupted", "SaeSweepError", "TrainingError", "__version__"]
