"""When has an SAE finished learning? Periodic held-out evaluation, decoder drift, and the stopping rule.

Every ``sae.eval_every`` steps the SAE is evaluated on a fixed held-out sample (the first ``sae.eval_rows`` rows of
the validation activations): loss, MSE, FVU, L0, the fraction of features that never fire there, and the decoder's
drift since the previous evaluation (for the features that fire: the mean of 1 - cos between each decoder column
and itself then). With ``sae.until=converged`` training stops at the first evaluation where both settle:

* the best held-out loss improved by less than ``sae.loss_tol`` (relative) over the last ``sae.window``
  evaluations, and
* the drift is below ``sae.drift_tol``,

or when it reaches its cap (``sae.epochs`` passes over the activations). ``sae.until=budget`` trains the whole cap.
The rule's state travels in checkpoints, so a resumed run stops at the same step as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch


@dataclass
class Evaluation:
    step: int  # optimizer steps done when it was taken
    loss: float
    mse: float
    fvu: float
    l0: float
    dead_fraction: float  # features that fire on no held-out row
    drift: float | None  # mean 1 - cos of the live features' decoder columns since the previous evaluation


@torch.no_grad()
def evaluate(sae, x: torch.Tensor, l1_coeff: float, previous_decoder: torch.Tensor | None, step: int) -> Evaluation:
    """The SAE on the held-out rows ``x`` (n, d_in) float32; drift against ``previous_decoder`` (d_in, J)."""
    return evaluate_with_counts(sae, x, l1_coeff, previous_decoder, step)[0]


@torch.no_grad()
def evaluate_with_counts(
    sae, x: torch.Tensor, l1_coeff: float, previous_decoder: torch.Tensor | None, step: int
) -> tuple[Evaluation, torch.Tensor]:
    """``evaluate``, and from the same pass the rows of ``x`` each feature fired on, (J,) int64."""
    x = x.to(sae.decoder.device)  # the rows stay on the CPU; the SAE may train on a GPU
    recon, codes = sae(x)  # (n, d_in), (n, J)
    mse = (recon - x).pow(2).mean()
    l1 = codes.sum(dim=1).mean()
    active = codes > 0  # (n, J)
    fired = active.any(dim=0)  # (J,)
    drift = None
    if previous_decoder is not None and fired.any():
        before = previous_decoder.to(sae.decoder.device)[:, fired]  # a resumed run's comes from a CPU checkpoint
        cos = (sae.decoder[:, fired] * before).sum(dim=0)  # unit columns: the dot is the cosine
        drift = float((1 - cos).mean())
    total_var = (x - x.mean(dim=0)).pow(2).sum().clamp_min(1e-12)
    l0 = count_true(active, dim=1).float().mean()
    ev = Evaluation(
        step=step,
        loss=float(held_out_loss(sae, mse, l1, l0, l1_coeff)),
        mse=float(mse),
        fvu=float(mse * x.numel() / total_var),
        l0=float(l0),
        dead_fraction=float((~fired).float().mean()),
        drift=drift,
    )
    return ev, count_true(active, dim=0)


def count_true(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """``mask.sum(dim)`` (int64) of a bool matrix, through numpy on the CPU: torch sums bools slowly along either
    axis (149 and 124 ms for a (4096, 8192) mask on one thread, numpy 14 ms), and an evaluation takes three such."""
    if mask.device.type != "cpu":
        return mask.sum(dim=dim)
    return torch.from_numpy(mask.numpy().sum(axis=dim, dtype=np.int64))


def held_out_loss(sae, mse: torch.Tensor, l1: torch.Tensor, l0: torch.Tensor, l1_coeff: float) -> torch.Tensor:
    """The objective the stopping rule watches: the training loss without AuxK (it only revives dead features); the
    architecture says its sparsity term (0 for TopK and BatchTopK, whose sparsity k fixes) from the mean l1 and
    mean l0 per row."""
    return mse + sae.architecture.penalty(l1, l0, 1, l1_coeff)


@dataclass
class StoppingRule:
    """Converged when the best loss gained less than ``loss_tol`` (relative) over ``window`` evaluations and the
    latest drift is below ``drift_tol``. ``history`` holds every evaluation so far."""

    window: int
    loss_tol: float
    drift_tol: float
    history: list[Evaluation] = field(default_factory=list)
    converged_at: int | None = None  # the step of the evaluation that met the rule

    def update(self, ev: Evaluation) -> bool:
        """Record ``ev``; True once the rule is met (and from then on)."""
        self.history.append(ev)
        if self.converged_at is None and self._settled():
            self.converged_at = ev.step
        return self.converged_at is not None

    def improvement(self) -> float | None:
        """Relative gain of the best loss over the last ``window`` evaluations (None until there are enough)."""
        losses = [e.loss for e in self.history]
        if len(losses) <= self.window:
            return None
        before, now = min(losses[: -self.window]), min(losses)
        return (before - now) / max(abs(now), 1e-12)

    def _settled(self) -> bool:
        gain, drift = self.improvement(), self.history[-1].drift
        return gain is not None and gain < self.loss_tol and drift is not None and drift < self.drift_tol

    def state_dict(self) -> dict:
        return {"history": [asdict(e) for e in self.history], "converged_at": self.converged_at}

    def load_state_dict(self, state: dict) -> None:
        self.history = [Evaluation(**e) for e in state["history"]]
        self.converged_at = state["converged_at"]


def progress_row(rule: StoppingRule) -> list[float]:
    """The rule's outcome as finite numbers: [step it was met (-1: not yet), evaluations, last improvement, last
    drift, whether each of the last two exists (0/1)]."""
    gain, drift = rule.improvement(), rule.history[-1].drift if rule.history else None
    at = -1 if rule.converged_at is None else rule.converged_at
    return [at, len(rule.history), gain or 0.0, drift or 0.0, gain is not None, drift is not None]


def progress_summary(progress: list[float], cfg, batch: int) -> dict:
    """What config.json records from [steps done, *progress_row]: whether and where the rule was met, the criterion's
    last values, and the budget used (``batch`` activations a step)."""
    steps, at, n_evals, gain, drift, has_gain, has_drift = progress
    return {
        "until": cfg.until,
        "converged": at >= 0,
        "converged_at_step": int(at) if at >= 0 else None,
        "steps": int(steps),
        "activations_seen": int(steps) * batch,
        "last_improvement": gain if has_gain else None,
        "last_drift": drift if has_drift else None,
        "window": cfg.window,
        "loss_tol": cfg.loss_tol,
        "drift_tol": cfg.drift_tol,
        "evaluations": int(n_evals),
    }
