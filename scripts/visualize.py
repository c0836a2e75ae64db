"""``lapo visualize``: a GIF of frames with their latent codes, a 2-D embedding of latents coloured
by true action, and a code-vs-action matrix, for a labeled dataset.

    lapo visualize --dataset runs/quickstart/dataset --labels runs/quickstart/labels --out runs/visualize
"""

from __future__ import annotations

import tyro

from lapo.visualize import VisualizeConfig, visualize


def main(cfg: VisualizeConfig) -> None:
    for path in visualize(cfg):
        print(f"wrote {path}")


if __name__ == "__main__":
    main(tyro.cli(VisualizeConfig))
