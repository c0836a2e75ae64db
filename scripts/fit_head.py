"""``lapo fit-head``: fit the k-shot action head and save head ∘ latent policy as an agent.

    lapo fit-head --policy runs/policy --dataset data/coinrun --k 256 --out runs/agent
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import tyro

from envs.dataset import EpisodeDataset
from lapo.agent import Agent
from lapo.checkpoint import load_weights, read_config
from lapo.decoder import ActionHeadConfig, fit_action_head, head_latents
from lapo.label import Labels
from lapo.policy import Policy, PolicyConfig


@dataclass
class Args:
    policy: Path
    """Latent policy checkpoint directory."""
    dataset: Path
    """Dataset with actions; only the k drawn transitions' actions are read."""
    labels: Path | None = None
    """Labels directory (default: DATASET/labels)."""
    k: int = 256
    """Labeled transitions."""
    seed: int = 0
    """Seed of the labeled-subset draw and the head's init."""
    out: Path = Path("runs/agent")
    """Agent directory."""
    head: ActionHeadConfig = field(default_factory=ActionHeadConfig)
    """Head (latent_dim and n_actions are set from the data)."""
    head_input: str = "policy"
    """Latents the head is fitted on: ``policy`` (π(o_t), what it sees when acting) or ``idm``
    (the IDM's latent of each labeled transition, LAPO's decoder)."""

    def __post_init__(self):
        if self.head_input not in ("policy", "idm"):
            raise ValueError(f"head_input {self.head_input!r}: choose 'policy' or 'idm'")


def main(args: Args) -> None:
    ds = EpisodeDataset(args.dataset)
    labels = Labels(args.labels or args.dataset / "labels")
    policy = load_weights(args.policy, Policy(PolicyConfig(**read_config(args.policy, "policy")["config"])))
    subset = ds.labeled_subset(args.k, args.seed)
    cfg = dataclasses.replace(args.head, latent_dim=int(labels.meta["latent_dim"]),
                              n_actions=int(ds.meta.get("n_actions", 15)))
    latents = head_latents(args.head_input, policy, ds.frames, labels.latents, subset.indices)
    head = fit_action_head(latents, subset.actions, cfg, args.seed)
    agent = Agent(policy, head)
    print(f"wrote {agent.save_pretrained(args.out, k=args.k, labeled_indices_seed=args.seed, head_input=args.head_input)}")


if __name__ == "__main__":
    main(tyro.cli(Args))
