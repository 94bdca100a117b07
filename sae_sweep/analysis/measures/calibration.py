"""The verdicts' match rule calibrated on the data being analysed: a parametric bootstrap, size by size.

A feature is found again in another seed when its match there is beyond the null and at least a cosine floor close.
How close two seeds' atoms for the same feature come depends on the data (0.99 on clean synthetic data, 0.9 on noisy
data), so one constant floor is either blind or credulous somewhere. The floor of each size is chosen here, on data
whose truth is known and which is made to look like the data analysed:

1. The first seed's largest dictionary (``truth_source``; or, with ``analysis.calibration_truth=own``, its
   dictionary of the size) encodes the held-out activations x (n, d_in) (``truth_model``):
   codes c = ReLU(W_enc (x - b_dec) + b_enc), reconstructions x^ = c D^T + b_dec, residuals r = x - x^. Its atoms that
   fire on them are the true features.
2. Bootstrap activations: x* = x^_i + e, with i drawn uniformly from the n held-out rows (the codes exactly as the SAE
   encodes real data: their sparsity, magnitudes and co-occurrence) and e ~ N(mean(r), cov(r)) (the real data's
   unexplained part, its size and its shape).
3. Two SAEs are trained on x* (``train_on``) with the analysed dictionary's own settings (architecture, l1, lr,
   batch, initialisation) on as many activations as the analysed one saw (``bootstrap_budget``; at most
   ``analysis.calibration_activations`` where that is set).
4. The verdicts are made for the pair exactly as for real dictionaries (the same nulls, BH and partial conjunction),
   at every cosine floor of ``FLOORS``. At each, per bootstrap dictionary, the precision of ``real`` (its real calls
   within ``analysis.recovered_cosine`` of a true feature) and the recall of the *replicable* truth (true features
   both bootstrap dictionaries hold within it; found: its nearest atom here is called real).
5. The size's floor is the smallest at which, in both, the lower end of the Wilson interval of the precision
   reaches ``analysis.calibration_precision`` (the bootstrap's own sampling error allowed for); its recall (both
   dictionaries' replicable truth pooled) is the estimated recall of ``real`` at that size, with the prediction
   interval of the recall one dictionary shows (``predicted_recall``). Where
   no floor reaches it, the highest is kept and the row says so.

The curves (precision and recall at every floor) are kept for the report's figure. Everything is a pure function of
the dictionaries, the held-out activations and the analysis settings, so it is computed once and kept in the cache
(``calibration_file``) under a digest of all three.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sae_sweep.analysis.measures.core import relu_codes
from sae_sweep.analysis.measures.features import Key, decoder_rows
from sae_sweep.analysis.measures.inference import wilson_interval
from sae_sweep.analysis.measures.mcs import max_cosine_similarity
from sae_sweep.analysis.measures.verdicts import Atoms, activation_cache, dictionary_table, verdicts
from sae_sweep.analysis.settings import AnalysisConfig
from sae_sweep.dictionary import Dictionary
from sae_sweep.files import atomic_write_text, json_digest

log = logging.getLogger(__name__)

FLOORS = np.round(np.arange(0.50, 0.996, 0.01), 2)  # the cosine floors tried, 0.50 ... 0.99
FORMAT = 2  # bump when the procedure changes: part of every calibration's key
CODE_ROWS = 65_536  # held-out rows encoded at most: the bootstrap's pool of codes
MOMENT_ROWS = 65_536  # bootstrap rows the moment null and the firing counts read
UNKNOWN_BUDGET = 1_000_000  # bootstrap activations for a dictionary that does not record its own, without a cap
BOOT_SEEDS = (0, 1)  # the two bootstrap SAEs' seeds (their initialisation and their batches)


@dataclass
class SizeCalibration:
    """One size's bootstrap: the floor chosen, its estimated recall and the curves it was chosen from."""

    dict_size: int
    truth_from: str  # the dictionary whose atoms were the true features
    n_true: int  # its live atoms
    replicable: int  # true features both bootstrap dictionaries hold within recovered_cosine
    activations: int  # bootstrap activations each bootstrap SAE was trained on
    floor: float  # the match_cosine of this size's verdicts
    reached: bool  # whether some floor held the precision (else floor is the highest tried)
    precision: float | None  # the bootstrap dictionaries' precision at the floor (pooled)
    recall: float | None  # estimated recall of real (pooled over the two), and its interval
    recall_lo: float | None
    recall_hi: float | None
    curve: list[dict] = field(default_factory=list)  # per floor: each bootstrap dictionary's real calls and right
    #                                                   ones (within recovered_cosine of the truth), recall's counts
    precision_lo: float | None = None  # the smaller lower end of the two's precision intervals at the floor


@dataclass
class Calibration:
    """A variant's calibration: the floor and estimated recall per size, and how they were made."""

    variant: str
    key: str  # digest of everything it is a function of
    sizes: dict[int, SizeCalibration]
    how: str  # one sentence: from what, and how the floor was chosen

    def floors(self) -> dict[int, float]:
        return {j: c.floor for j, c in self.sizes.items()}

    def to_json(self) -> str:
        return json.dumps({"variant": self.variant, "key": self.key, "how": self.how,
                           "sizes": [dataclasses.asdict(c) for c in self.sizes.values()]}, indent=1)  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        data = json.loads(text)
        sizes = {int(c["dict_size"]): SizeCalibration(**c) for c in data["sizes"]}
        return cls(data["variant"], data["key"], sizes, data["how"])


def calibration_key(dicts: dict[Key, Dictionary], val: np.ndarray, cfg: AnalysisConfig) -> str:
    """The digest of what a calibration is a function of: every dictionary's tensors, the held-out rows it encodes
    and the settings it reads."""
    h = hashlib.sha256(f"calibration-v{FORMAT}".encode())
    for k in sorted(dicts):
        d = dicts[k]
        h.update(f"{d.name}:{d.config.sae}".encode())
        for name in sorted(d.tensors):
            h.update(name.encode() + d.tensors[name].detach().cpu().contiguous().numpy().tobytes())
    h.update(np.ascontiguousarray(val[:CODE_ROWS]).tobytes())
    read = ("seed", "fdr", "min_replications", "verdict_null", "null_rows", "recovered_cosine", "calibration_truth")
    settings = {n: getattr(cfg, n) for n in (*read, "calibration_activations")}  # not the target: see ``chosen``
    h.update(json_digest(settings).encode())
    return h.hexdigest()


def calibration_file(cache_dir: Path, variant: str, key: str) -> Path:
    return Path(cache_dir) / "calibration" / f"{variant or 'note'}-{key[:20]}.json"


def load_calibration(cache_dir: Path | None, variant: str, key: str) -> Calibration | None:
    """The calibration kept for exactly these inputs, or None."""
    if cache_dir is None:
        return None
    path = calibration_file(cache_dir, variant, key)
    if not path.is_file():
        return None
    cal = Calibration.from_json(path.read_text())
    return cal if cal.key == key else None


def save_calibration(cache_dir: Path, cal: Calibration) -> Path:
    path = calibration_file(cache_dir, cal.variant, cal.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, cal.to_json())
    return path


# ------------------------------------------------------------------------------------------ the bootstrap data


@dataclass(frozen=True)
class BootstrapData:
    """The generating process of step 2: x* = recon[i] + mean + z @ chol^T."""

    recon: torch.Tensor  # (n, d_in) reconstructions of the held-out rows
    mean: torch.Tensor  # (d_in,) the residuals' mean
    chol: torch.Tensor  # (d_in, d_in) a Cholesky factor of their covariance
    truth: np.ndarray  # (n_true, d_in) the live atoms: the true features

    def rows(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` bootstrap activations (n, d_in) float32."""
        i = torch.randint(self.recon.shape[0], (n,), generator=gen)
        z = torch.randn(n, self.recon.shape[1], generator=gen)
        return self.recon[i] + self.mean + z @ self.chol.T


def truth_model(d: Dictionary, val: np.ndarray, chunk: int = 8192) -> BootstrapData:
    """Step 1: the bootstrap's generating process from dictionary ``d`` and held-out rows ``val`` (n, d_in)."""
    tensors = {k: t.float() for k, t in d.tensors.items()}
    x_all = torch.from_numpy(np.asarray(val[:CODE_ROWS], dtype=np.float32))
    recon, fired = [], torch.zeros(d.dict_size, dtype=torch.bool)
    for lo in range(0, len(x_all), chunk):
        x = x_all[lo : lo + chunk]
        codes = relu_codes(tensors, x)  # (B, J)
        fired |= (codes > 0).any(dim=0)
        r = codes @ tensors["decoder"].t()
        recon.append(r + tensors["decoder_bias"] if "decoder_bias" in tensors else r)
    recon = torch.cat(recon)
    resid = (x_all - recon).double()
    mean = resid.mean(dim=0)
    cov = torch.cov(resid.T) + 1e-9 * torch.eye(resid.shape[1], dtype=torch.float64)
    chol = torch.linalg.cholesky(cov)
    truth = decoder_rows(d)[fired.numpy()]
    return BootstrapData(recon, mean.float(), chol.float(), truth)


def train_on(data: BootstrapData, d: Dictionary, seed: int, activations: int) -> tuple[np.ndarray, np.ndarray]:
    """Step 3: an SAE with ``d``'s settings (another seed) trained on ``activations`` bootstrap rows; its atoms
    (J, d_in) and their firing frequency (J,) on MOMENT_ROWS fresh bootstrap rows."""
    from sae_sweep.train.sae import SAEConfig, SparseAutoencoder  # noqa: PLC0415 - training code, loaded when asked

    cfg = dataclasses.replace(SAEConfig(**d.config.sae), seed=seed)
    sae = SparseAutoencoder(d.d_in, cfg)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, fused=True)  # the SAE stage's optimiser
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 43]).generate_state(1)[0]))
    for _ in range(max(1, activations // cfg.batch_size)):
        x = data.rows(cfg.batch_size, gen)
        sae.fused_grads(x, cfg.l1_coeff, cfg.step, cfg.sparse_max_density)
        opt.step()
        sae.normalize_decoder_()
    with torch.no_grad():
        fired = torch.zeros(d.dict_size)
        for _ in range(MOMENT_ROWS // 8192):
            fired += (sae.encode(data.rows(8192, gen)) > 0).sum(dim=0)
    return sae.decoder.detach().T.contiguous().numpy().copy(), (fired / MOMENT_ROWS).numpy()


def train_pair(data: BootstrapData, d: Dictionary, activations: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``train_on`` for each of BOOT_SEEDS at once, a thread each with one torch thread (torch's kernels release the
    GIL, so the two use two cores as the sweep's two jobs do; with the process's threads shared between them instead,
    they would wait on each other's small kernels)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(len(BOOT_SEEDS)) as pool:
            return list(pool.map(lambda s: train_on(data, d, 1_000 + s, activations), BOOT_SEEDS))
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------ the floors


def floor_curve(atoms: dict, v, truth: np.ndarray, cfg: AnalysisConfig) -> list[dict]:
    """Step 4: per floor of FLOORS, each bootstrap dictionary's real calls and how many of them are right, and the
    replicable truth found (pooled), from verdicts ``v`` made once (the floor only masks matches)."""
    keys = sorted(atoms)
    true_hit = {k: max_cosine_similarity(atoms[k].rows, truth, chunk_size=cfg.chunk_size, device=cfg.device)[0]
                > cfg.recovered_cosine for k in keys}  # fmt: skip  # (J,) each atom: within reach of a true feature
    nearest = {}  # k -> (n_true,) each true feature's cosine to and index of its nearest atom in k
    for k in keys:
        cos, idx = max_cosine_similarity(truth, atoms[k].rows, chunk_size=cfg.chunk_size, device=cfg.device)
        nearest[k] = (cos, idx)
    replicable = np.logical_and.reduce([nearest[k][0] > cfg.recovered_cosine for k in keys])
    curve = []
    for floor in FLOORS:
        w = dataclasses.replace(v, floors=dict.fromkeys({k[0] for k in keys}, float(floor)))
        called, right, found = [], [], 0
        for k in keys:
            real = dictionary_table(atoms, k, w, cfg)["verdict"] == "real"
            called.append(int(real.sum()))
            right.append(int((real & true_hit[k]).sum()))
            found += int(real[nearest[k][1][replicable]].sum())
        curve.append({"floor": float(floor), "called": called, "right": right,
                      "found": found, "replicable": int(replicable.sum()) * len(keys)})  # fmt: skip
    return curve


def precision_bound(row: dict, level: float) -> float | None:
    """The smaller, over the bootstrap dictionaries, of the lower end of the Wilson interval of their precision at
    this floor (right / called); None where neither calls anything real: no evidence of precision there (below the
    true count, say, the bootstrap's merged atoms may not replicate where the real ones do)."""
    ends = [wilson_interval(r, n, level)[0] for r, n in zip(row["right"], row["called"], strict=True) if n]
    return min(ends) if ends else None


def precision_at(c: SizeCalibration, floor: float) -> tuple[int, int] | None:
    """The bootstrap dictionaries' real calls at ``floor`` that were right, and all of them (pooled): what a fixed
    floor (``analysis.match_cosine``) would give on these data. None where the floor is not one of the curve's."""
    row = next((r for r in c.curve if abs(r["floor"] - floor) < 1e-9), None)
    return None if row is None else (sum(row["right"]), sum(row["called"]))


def predicted_recall(k: int, n: int, m: int, level: float) -> tuple[float, float]:
    """The ``level`` prediction interval of the recall one dictionary shows on ``m`` features, from ``k`` of ``n``
    found on the bootstrap: its rate's Jeffreys posterior Beta(k + 1/2, n - k + 1/2), then m draws (beta-binomial).
    Wider than the rate's own interval: a dictionary's recall is a new sample of m features, not the rate itself."""
    from scipy.stats import betabinom  # noqa: PLC0415 - scipy loads with the analysis, not with this module

    law = betabinom(m, k + 0.5, n - k + 0.5)
    return float(law.ppf((1 - level) / 2) / m), float(law.ppf((1 + level) / 2) / m)


def choose(curve: list[dict], target: float, level: float) -> tuple[dict, bool]:
    """Step 5: the lowest floor whose precision reaches ``target`` in both bootstrap dictionaries, with the
    bootstrap's own sampling error allowed for (``precision_bound``: the lower end of its interval must reach it),
    and its recall with the prediction interval of one dictionary's (``predicted_recall``: a bootstrap dictionary's
    share of the replicable truth); else the highest floor, and False."""
    bounds = [precision_bound(c, level) for c in curve]
    ok = [i for i, b in enumerate(bounds) if b is not None and b >= target]  # shown, not merely not contradicted
    i = ok[0] if ok else len(curve) - 1
    row = curve[i]
    k, n = row["found"], row["replicable"]
    recall = (k / n, *predicted_recall(k, n, n // len(row["called"]), level)) if n else (None, None, None)
    called = sum(row["called"])
    precision = sum(row["right"]) / called if called else None
    return {**row, "precision": precision, "precision_lo": bounds[i], "recall": recall}, bool(ok)


def truth_source(dicts: dict[Key, Dictionary], j: int, cfg: AnalysisConfig) -> Dictionary:
    """The dictionary whose live atoms are the bootstrap's true features for size ``j``: the first seed's largest
    (``analysis.calibration_truth=largest``: the finest structure the variant shows, so that a size too small to hold
    it is seen merging it, and its merged atoms are not counted right) or its size-``j`` one (``own``)."""
    first = min(s for _, s in dicts)
    size = max(k[0] for k in dicts if k[1] == first) if cfg.calibration_truth == "largest" else j
    return dicts[(size, first)]


def calibrate_size(
    dicts: dict[Key, Dictionary], j: int, val: np.ndarray, cfg: AnalysisConfig, models: dict | None = None
) -> SizeCalibration:
    """Steps 1-5 for size ``j``: two SAEs with its first seed's settings on the bootstrap of ``truth_source``
    (``models``: truth models already made, by dictionary name)."""
    d = dicts[min(k for k in dicts if k[0] == j)]
    source = truth_source(dicts, j, cfg)
    models = {} if models is None else models
    if source.name not in models:
        models[source.name] = truth_model(source, val)
    data = models[source.name]
    budget = bootstrap_budget(d, cfg)
    trained = train_pair(data, d, budget)
    pairs = zip(BOOT_SEEDS, trained, strict=True)
    atoms = {(j, s): Atoms(f"bootstrap-J{j}-s{s}", rows, firing) for s, (rows, firing) in pairs}
    sample = data.rows(MOMENT_ROWS, torch.Generator().manual_seed(cfg.seed)).numpy()
    v = verdicts(atoms, cfg, sample if cfg.verdict_null in ("auto", "moment", "rows") else None)
    curve = floor_curve(atoms, v, data.truth, cfg)
    replicable = curve[0]["replicable"] // len(BOOT_SEEDS)
    made = SizeCalibration(
        j, source.name, len(data.truth), replicable, budget, 1.0, False, None, None, None, None, curve
    )
    return chosen(made, cfg)


def bootstrap_budget(d: Dictionary, cfg: AnalysisConfig) -> int:
    """Activations each bootstrap SAE of ``d``'s size trains on: as many as ``d`` saw (the run's own budget, so that
    the bootstrap's seeds converge as far as the analysed ones did), at most ``analysis.calibration_activations``;
    UNKNOWN_BUDGET for a dictionary that does not say (one trained elsewhere) and no cap given."""
    seen, cap = d.config.training.get("activations_seen") or None, cfg.calibration_activations
    if seen is None:
        return cap or UNKNOWN_BUDGET
    return seen if cap is None else min(seen, cap)


def chosen(c: SizeCalibration, cfg: AnalysisConfig) -> SizeCalibration:
    """``c`` with its floor and estimate chosen from its curve for ``analysis.calibration_precision`` (the curve does
    not depend on the target: a kept calibration serves any)."""
    row, reached = choose(c.curve, cfg.calibration_precision, cfg.level)
    recall, lo, hi = row["recall"]
    return dataclasses.replace(c, floor=row["floor"], reached=reached, precision=row["precision"], recall=recall,
                               recall_lo=lo, recall_hi=hi, precision_lo=row["precision_lo"])  # fmt: skip


def calibrate(dicts: dict[Key, Dictionary], val: np.ndarray, cfg: AnalysisConfig, variant: str, key: str,
              progress=None) -> Calibration:  # fmt: skip
    """Every size of a variant with two or more seeds, calibrated (``calibrate_size``)."""
    track = progress or (lambda it, total, description: it)
    sizes = sorted({j for j, _ in dicts})
    models: dict = {}
    out = {}
    for j in track(sizes, len(sizes), "calibration (bootstrap SAEs)"):
        start = time.perf_counter()
        out[j] = c = calibrate_size(dicts, j, val, cfg, models)
        log.info("calibrated %s J=%d in %.0f s: floor %.2f, estimated recall %s", variant or "the note's run", j,
                 time.perf_counter() - start, c.floor, "n/a" if c.recall is None else f"{c.recall:.3f}")  # fmt: skip
    truth = (
        "the first seed's largest dictionary's" if cfg.calibration_truth == "largest" else "each size's first seed's"
    )
    how = (
        f"per size, the smallest cosine floor (of {FLOORS[0]:.2f} ... {FLOORS[-1]:.2f}) at which the real calls on a "
        f"parametric bootstrap of the data ({truth} live atoms as the true features, its codes of the held-out "
        "activations, the residual's mean and covariance; two SAEs of the size trained on it) reached the target "
        "precision in both"
    )
    return Calibration(variant, key, out, how)


def run_calibration(run, progress=None) -> Calibration | None:
    """The calibration of an analysed variant's dictionaries: the one kept for exactly these inputs, else made now
    (and kept) when ``analysis.calibrate`` asks for it; None without one, or where it cannot be made (fewer than two
    seeds, no held-out activations, or an architecture other than the ReLU SAE the bootstrap trains)."""
    cfg: AnalysisConfig = run.results.config
    cache = activation_cache(run.dicts, run.cache_dir)
    if cache is None or len({s for _, s in run.dicts}) < 2 or not calibratable(run.dicts):
        return None
    kept_here = calibration_file(run.cache_dir, run.variant, "").parent
    if not cfg.calibrate and not any(kept_here.glob(f"{run.variant or 'note'}-*.json")):
        return None  # nothing kept for this variant: no need to digest every tensor (on every analysis) to know it
    key = calibration_key(run.dicts, cache.val, cfg)
    kept = load_calibration(run.cache_dir, run.variant, key)
    if kept is not None:
        return dataclasses.replace(kept, sizes={j: chosen(c, cfg) for j, c in kept.sizes.items()})
    if not cfg.calibrate:
        return None
    cal = calibrate(run.dicts, cache.val, cfg, run.variant, key, progress)
    save_calibration(run.cache_dir, cal)
    return cal


def attach(run) -> Calibration | None:
    """``run_calibration`` of an analysed variant, its floors set on the run for its verdicts to use: call before
    the verdicts are first asked for."""
    cal = run.measured(run_calibration)
    run.floors = cal.floors() if cal else {}
    return cal


def calibratable(dicts: dict[Key, Dictionary]) -> bool:
    """Whether the bootstrap can retrain these dictionaries: the ReLU + L1 SAE, untied, trained here."""
    sae = [d.config.sae for d in dicts.values()]
    return all(c and c.get("arch", "relu") == "relu" and not c.get("tied") for c in sae)
