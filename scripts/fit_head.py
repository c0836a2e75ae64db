"""``lapo fit-head``: fit the k-shot action head and save head ∘ latent policy as an agent.

    lapo fit-head --policy runs/policy --dataset data/coinrun --k 256 --out runs/agent
    lapo fit-head --policy runs/policy --dataset data/metaworld --k 5 --unit episode --per-task --head.continuous bins
    lapo fit-head ... --tune-steps 1500    # then fine-tune the whole agent on the same k labels
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import tyro

from envs.dataset import EpisodeDataset
from lapo import stages
from lapo.decoder import ActionHeadConfig
from lapo.label import Labels
from lapo.policy import Policy, PolicyTrainConfig


@dataclass
class Args:
    policy: Path
    """Latent policy checkpoint directory."""
    dataset: Path
    """Dataset with actions; only the k drawn transitions' (or episodes') actions are read."""
    labels: Path | None = None
    """Labels directory, read with ``--head-input idm`` only (default: DATASET/labels)."""
    k: int = 256
    """Labeled transitions (or episodes with ``--unit episode``)."""
    unit: str = "transition"
    """What k counts: ``transition`` or ``episode`` (every transition of k labeled episodes)."""
    per_task: bool = False
    """Draw k of them from each task of a multi-task dataset (``task_ids.npy``)."""
    seed: int = 0
    """Seed of the labeled-subset draw and the head's init."""
    out: Path = Path("runs/agent")
    """Agent directory."""
    head: ActionHeadConfig = field(default_factory=ActionHeadConfig)
    """Head (latent_dim and the action space are set from the data)."""
    head_input: str = "policy"
    """Latents the head is fitted on: ``policy`` (π(o_t), what it sees when acting) or ``idm``
    (the IDM's latent of each labeled transition, LAPO's decoder)."""
    device: str = "auto"
    """Where the agent is built: ``auto``, ``cpu`` or ``cuda``."""
    tune_steps: int = 0
    """Then fine-tune the whole agent (policy and head) end to end on the same k labels for this many
    BC steps (:func:`lapo.stages.tune_agent`; BC on k's recipe otherwise). 0: the head only (LAPO's
    decoder). The Meta-World benchmark's ``ours_tuned`` row uses 1,500."""

    def __post_init__(self):
        if self.head_input not in ("policy", "idm"):
            raise ValueError(f"head_input {self.head_input!r}: choose 'policy' or 'idm'")
        if self.tune_steps < 0:
            raise ValueError(f"tune_steps must be >= 0 (0: fit the head only), got {self.tune_steps}")


def main(args: Args) -> None:
    ds = EpisodeDataset(args.dataset)
    labels = Labels(args.labels or args.dataset / "labels") if args.head_input == "idm" else None
    policy = Policy.from_pretrained(args.policy, args.device)
    subset = ds.labeled_subset(args.k, args.seed, unit=args.unit, per_task=args.per_task)
    tune = PolicyTrainConfig(steps=args.tune_steps, seed=args.seed, device=args.device) if args.tune_steps else None
    stages.fit_head(policy, ds, labels, subset, args.head, args.head_input, args.seed, out=args.out, tune=tune)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(tyro.cli(Args))
