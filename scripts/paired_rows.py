"""Paired difference of two benchmark rows on the same levels, from a run directory's cells:

    python -m scripts.paired_rows --run-dir runs/fbdiag --k 256 --rows ours_relabel_tuned ours_relabel

``row − base`` of normalized returns, episode by episode on the levels both rows played (every seed
and game both have), with a stratified bootstrap 95% CI: :func:`lapo.benchmark.paired_difference`,
the computation behind the benchmark's "ours − BC / IDM" targets, for any two rows. A k-independent
row (``oracle_bc``) is read at ``all``. Prints one line per game and the overall one; ``--out`` JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import tyro


@dataclass
class Args:
    run_dir: Path
    """A ``lapo benchmark`` run directory (its ``cells/GAME/METHOD/kK|all/seedS.json``)."""
    rows: tuple[str, str]
    """``row base``: the difference row − base."""
    k: int = 256
    """k of the k-dependent rows."""
    out: Path | None = None


def main(args: Args) -> dict:
    """Raises ValueError when the two rows share no seed with references in the run directory."""
    from lapo.benchmark import K_METHODS, index_cells, paired_difference

    by_key, refs = index_cells([json.loads(p.read_text())
                                for p in sorted(Path(args.run_dir, "cells").glob("*/*/*/seed*.json"))])
    row, base = ((m, args.k if m in K_METHODS else None) for m in args.rows)
    d = paired_difference(by_key, refs, row, base)
    if d is None:
        raise ValueError(f"{args.rows}: no game of {args.run_dir} has both rows and the references on a common seed")
    for game, g in d["per_game"].items():
        print(f"{game}: {args.rows[0]} - {args.rows[1]} {g['mean']:+.2f} [{g['ci95'][0]:+.2f}, {g['ci95'][1]:+.2f}] "
              f"({g['seeds']} seeds)")
    print(f"all: {d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]")
    if args.out:
        from envs.io import atomic_write_text

        atomic_write_text(args.out, json.dumps({"rows": list(args.rows), "k": args.k, **d}, indent=2))
    return d


if __name__ == "__main__":
    main(tyro.cli(Args))
