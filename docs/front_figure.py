"""The README's figure: the question (the MCS histogram, the report's Figure 3) beside the answer (which features
are real, by size: Figure 21), from one report folder.

    python docs/front_figure.py sae_sweep_out/analysis docs/images/front.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.image import imread

PANELS = ("fig03_mcs_hist.png", "fig21_verdicts.png")  # the question, the answer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path, help="a report folder written by analyze.py")
    ap.add_argument("out", type=Path, help="the PNG to write")
    args = ap.parse_args(argv)
    missing = [p for p in PANELS if not (args.report / p).is_file()]
    if missing:
        print(f"error: {args.report} has no {', '.join(missing)}: give the folder analyze.py wrote", file=sys.stderr)
        return 2
    images = [imread(args.report / p) for p in PANELS]  # (H, W, 4) each
    widths = [im.shape[1] / im.shape[0] for im in images]  # aspect ratios: each panel at the same height
    fig = Figure(figsize=(4 * sum(widths), 4), dpi=110)
    axes = fig.subplots(1, len(images), gridspec_kw={"width_ratios": widths})
    for ax, im in zip(axes, images, strict=True):
        ax.imshow(im)
        ax.set_axis_off()
    fig.subplots_adjust(left=0, right=1, top=1, bottom=0, wspace=0.02)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
