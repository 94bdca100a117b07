"""What the analysis hands on beyond its report, both about the dictionaries it analysed:

* ``core/``: the stable core of each size trained on two or more seeds, a store of ``sae-core`` artifacts
  (stable_core.py: tensors, core.json and a SAELens folder each; analysis/measures/core.py says how they are made);
* ``latent_scores.csv``: a row per feature of the main run, what a SAELens or Neuronpedia user filters latents by
  (verdict, p, q, replications, stability, firing frequency, family, parent, core latent), with
  ``latent_scores.json`` saying which dictionaries were analysed and under what settings. ``python -m
  sae_sweep.interop.export`` copies each dictionary's rows into its export.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from sae_sweep.analysis.measures.core import Core, core_sizes, cores_of
from sae_sweep.analysis.measures.families import families_of
from sae_sweep.analysis.measures.verdicts import feature_verdicts
from sae_sweep.analysis.report.tables import write_csv
from sae_sweep.analysis.stable_core import RULE, CoreConfig, core_name, save_core
from sae_sweep.dictionary import SAE_WEIGHTS_FILE
from sae_sweep.files import sha256_file
from sae_sweep.store import ArtifactStore

log = logging.getLogger(__name__)

CORE_DIR, SCORES, SCORES_META = "core", "latent_scores.csv", "latent_scores.json"
SCORE_COLUMNS = ("verdict", "p", "q", "replications", "references", "stability", "firing_frequency", "match_cos")


def core_config(run, core: Core) -> CoreConfig:
    first = run.dicts[(core.size, core.seeds[0])]
    v = run.measured(feature_verdicts)
    cfg = run.results.config
    return CoreConfig(
        name=core_name(first.config.layer, core.size, run.variant),
        variant=run.variant,
        layer=first.config.layer,
        d_in=first.d_in,
        dict_size=core.size,
        n_features=int(core.members.shape[0]),
        seeds=core.seeds,
        sources=[run.dicts[(core.size, s)].name for s in core.seeds],
        rule=RULE,
        analysis={"fdr": cfg.fdr, "match_cosine": v.floor(core.size, cfg), "nulls": v.nulls},  # the floor used
        members=core.members.tolist(),
        medoid=core.medoid.tolist(),
        mean_cos=[round(float(c), 6) for c in core.mean_cos],
        metrics=core.metrics,
        source={"gpt": first.config.gpt, "synthetic": first.config.synthetic},
    )


def score_rows(run) -> list[dict]:
    """latent_scores.csv: a row per feature of ``run``, its verdict's columns, its family and its core latent."""
    table = run.measured(feature_verdicts).table
    fam = run.measured(families_of)
    in_core = {}
    for j, core in run.measured(cores_of).items():
        for latent, members in enumerate(core.members):
            for s, f in zip(core.seeds, members, strict=True):
                in_core[(j, s, int(f))] = latent
    rows = []
    for r in table:
        key = (int(r["dict_size"]), int(r["seed"]), int(r["feature"]))
        row = {"name": str(r["name"]), "feature": key[2]}
        row.update({c: _cell(r[c].item()) for c in SCORE_COLUMNS})
        row.update(family=fam.member_of.get(key, ""), parent=_parent(fam, key), core_latent=in_core.get(key, ""))
        rows.append(row)
    return rows


def _parent(fam, key: tuple[int, int, int]):
    """The feature's parent in the next smaller size of its seed ("" when it has none)."""
    for (_, large), (parent, _) in fam.links.items():
        if large == key[:2]:
            p = int(parent[key[2]])
            return p if p >= 0 else ""
    return ""


def _cell(value):
    return "" if isinstance(value, float) and math.isnan(value) else value


def write_products(run, out: Path) -> list[str]:
    """``out/core/`` and ``out/latent_scores.csv`` (with its .json) for the main run; returns the cores' names."""
    rows = score_rows(run)
    write_csv(out / SCORES, rows)
    cfg = run.results.config
    meta = {
        "variant": run.variant,
        "analysed": sorted(d.name for d in run.dicts.values()),
        "nulls": run.measured(feature_verdicts).nulls,
        "fdr": cfg.fdr,
        "match_cosine": cfg.match_cosine,
        "min_replications": cfg.min_replications,
        "columns": list(rows[0]) if rows else [],
        "weights_sha256": {
            d.name: sha256_file(d.path / SAE_WEIGHTS_FILE)
            for d in run.dicts.values()
            if (d.path / SAE_WEIGHTS_FILE).is_file()
        },  # the export checks its version's against it
        "csv_sha256": sha256_file(out / SCORES),
    }  # fmt: skip - the export refuses a CSV edited since, and scores of another version of a dictionary
    (out / SCORES_META).write_text(json.dumps(meta, indent=2) + "\n")
    names = []
    store = ArtifactStore(out / CORE_DIR)
    for core in run.measured(cores_of).values():
        c = core_config(run, core)
        save_core(store, c, core.tensors, core.firing)
        names.append(c.name)
    _, why = core_sizes(run)
    if why:
        log.info("%s", why)
    return names
