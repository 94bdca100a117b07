"""A partial sweep: which of a variant's dictionaries the note's comparisons can use, and a line for each left out.

Every size is compared with the reference size (the largest, or ``analysis.reference``) of the same seed, so a seed
without the reference, or with no size below it, has nothing to compare. A sweep stopped early or extended seed by
seed is normal: the reference is the size that lets the most dictionaries be compared (the largest on a tie; on a
whole sweep, the largest size), the others are left out, and each one left out is named with the reason.
"""

from __future__ import annotations

from sae_sweep.analysis.collect import Collection
from sae_sweep.errors import DataError


def usable(keys: set[tuple[int, int]], reference: int) -> set[tuple[int, int]]:
    """The (size, seed) keys comparable against ``reference``: those at or below it, of seeds that have it and a
    smaller size."""
    seeds = {s for j, s in keys if j == reference}
    seeds = {s for s in seeds if any(j < reference for j, t in keys if t == s)}
    return {(j, s) for j, s in keys if s in seeds and j <= reference}


def best_reference(keys: set[tuple[int, int]], asked: int | None) -> int | None:
    """``asked`` when it is one of the sizes, else the size that keeps the most dictionaries comparable (the larger
    on a tie); None when no seed has two sizes."""
    sizes = sorted({j for j, _ in keys})
    if asked in sizes:
        return asked
    counts = {j: len(usable(keys, j)) for j in sizes}
    best = max(sizes, key=lambda j: (counts[j], j))
    return best if counts[best] else None


def keep_comparable(found: Collection, reference: int | None) -> tuple[Collection, dict[str, list[str]]]:
    """Each variant's dictionaries that can be compared, and for each variant the lines naming those left out.

    A variant whose seeds all hold one size (a single-size sweep) is kept whole: its report says what it skips."""
    kept: Collection = {}
    notes: dict[str, list[str]] = {}
    for variant, dicts in found.items():
        keys = set(dicts)
        ref = best_reference(keys, reference)
        if ref is None or usable(keys, ref) == keys:
            kept[variant] = dicts
            continue
        use = usable(keys, ref)
        kept[variant] = {k: d for k, d in dicts.items() if k in use}
        notes[variant] = [f"{dicts[k].name} is left out: {_why(k, keys, ref)} (compared: seeds "
                          f"{sorted({s for _, s in use})} at sizes up to J={ref}; train the missing dictionaries "
                          "to include it)" for k in sorted(keys - use)]  # fmt: skip
    return kept, notes


def _why(key: tuple[int, int], keys: set[tuple[int, int]], ref: int) -> str:
    size, seed = key
    mine = {j for j, s in keys if s == seed}
    if ref not in mine:
        return f"seed {seed} has no J={ref}, the reference size"
    if size > ref:
        return f"J={size} is above the reference size J={ref}"
    return f"seed {seed} has no size below the reference J={ref}"


def source_of(d) -> tuple[str | None, str | None]:
    """What a dictionary was trained on: its GPT artifact and its activation cache's key (which holds the layer, the
    token count and the GPT's digest); (None, None) for an imported SAE, which does not say."""
    gpt = (d.config.gpt or {}).get("artifact") if isinstance(d.config.gpt, dict) else None
    return gpt, (d.config.activations or {}).get("key")


def check_one_source(found: Collection) -> None:
    """DataError when a variant's dictionaries were trained on different activations (another GPT, another
    ``harvest.n_tokens``): compared as one sweep, their differences would read as the dictionary size's. Both are
    named, with what each was trained on."""
    for variant, dicts in found.items():
        by_source: dict[tuple, list] = {}
        for _, d in sorted(dicts.items()):
            if source_of(d) != (None, None):
                by_source.setdefault(source_of(d), []).append(d)
        if len(by_source) < 2:
            continue
        (first, a), (second, b) = list(by_source.items())[:2]
        label = f"variant {variant!r}" if variant else "the main run"
        raise DataError(
            f"the dictionaries of {label} were trained on different activations: {a[0].name} (and "
            f"{len(a) - 1} more) on {first[1]} of {first[0] or 'synthetic data'}, {b[0].name} (and {len(b) - 1} "
            f"more) on {second[1]} of {second[0] or 'synthetic data'}. One sweep is compared on one set of "
            "activations: train the odd ones again with the others' gpt= and harvest settings (force=true), or "
            "analyse the two sets from separate stores (source.path=...)"
        )
