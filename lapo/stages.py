"""The stage graph: collect → train-lam → label → latent BC → fit-head → evaluate (+ BC for baselines).

Each stage is one function with a typed config, its inputs, an output directory and a **reuse
rule**: an output directory that holds a finished result whose stored ``record`` (the stage's
config plus fingerprints of its inputs, see :func:`fingerprint`) equals the requested one is loaded
instead of recomputed; anything else is computed again, and a training stage resumes from a
training state an interrupted run left there (see :mod:`lapo.training`). ``reuse=False`` recomputes
regardless, and so does a training stage whose config says ``resume="never"`` (it then starts
from scratch). The quickstart
(:mod:`lapo.pipeline`), the benchmark (:mod:`lapo.benchmark`) and the CLIs (:mod:`scripts`)
compose these functions and hold no training logic of their own. A stage that saves its output
holds a file lock on it (:func:`envs.io.file_lock`) from the reuse check to the save, so processes
sharing a run directory compute each output once: the second waits, then reuses it (a
``lapo benchmark`` worker instead moves on to other cells: :func:`lapo.benchmark.run_benchmark`).

True actions are read by :func:`fit_head` and :func:`behaviour_cloning` (their callers pass a
labeled subset, or, for the oracle baseline, all actions) and by :func:`train_lam`'s diagnostic
probe (``probe_k`` labeled transitions; it scores the latents and never influences training).

Dimension keys: N frames, k labeled transitions, L latent dim.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from envs.dataset import EpisodeDataset, LabeledSubset, space_to_json
from envs.io import file_lock
from lapo.decoder import ActionCoding, ActionHeadConfig
from lapo.lam import LAMConfig, LAMTrainConfig, LatentActionModel
from lapo.policy import Policy, PolicyConfig, PolicyTrainConfig
from lapo.training import run_record


def fingerprint(path: str | os.PathLike) -> str:
    """A short content hash of a stage output: a checkpoint (``config.json`` + ``model.safetensors``)
    or a labels directory (``meta.json`` + ``latents.npy`` size). A dataset has its own:
    :meth:`envs.dataset.EpisodeDataset.fingerprint`."""
    path = Path(path)
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "meta.json"):
        if (path / name).is_file():
            h.update((path / name).read_bytes())
    if (path / "latents.npy").is_file():
        h.update(str((path / "latents.npy").stat().st_size).encode())
    return h.hexdigest()[:16]


def stored_record(path: Path, file: str) -> dict | None:
    """The ``record`` stored in ``path/file`` (a checkpoint's config.json or a labels meta.json), or
    None: what the reuse rule compares with the requested record."""
    try:
        return json.loads((path / file).read_text()).get("record")
    except (OSError, json.JSONDecodeError):
        return None


def pool_hash(indices: np.ndarray) -> str:
    """Short hash of an index array (a training pool or labeled subset) for records."""
    return hashlib.sha256(np.ascontiguousarray(indices, np.int64).tobytes()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# stages
# ----------------------------------------------------------------------------------------------


def collect(cfg, reuse: bool = True) -> EpisodeDataset:
    """Record demonstrator video: Procgen (:class:`envs.collect.CollectConfig`) or Meta-World's
    scripted experts (:class:`envs.metaworld.MetaWorldCollectConfig`). Reuse rule: ``cfg.out`` holds a
    dataset collected with the same settings and demonstrator weights (``meta.json["collect_config"]``,
    :func:`envs.collect.same_video`); a collected dataset of other settings is replaced once the new
    one is complete. Stages after it are keyed on the dataset's content
    (:meth:`envs.dataset.EpisodeDataset.fingerprint`), so a re-collection that writes the same
    video (``reuse=False``, a changed setting that does not change the video) keeps them.

    Raises:
        FileExistsError: ``cfg.out`` holds a dataset that ``collect`` did not make.
    """
    from envs.collect import same_video
    from envs.metaworld import MetaWorldCollectConfig

    if isinstance(cfg, MetaWorldCollectConfig):
        from envs.metaworld import collect as run_collect
        from envs.metaworld import collect_record
    else:
        from envs.collect import collect as run_collect
        from envs.collect import collect_record

    meta = Path(cfg.out) / "meta.json"
    with file_lock(cfg.out):
        recorded = json.loads(meta.read_text()).get("collect_config") if meta.is_file() else None
        if meta.is_file() and recorded is None:
            raise FileExistsError(f"{cfg.out} holds a dataset that `lapo collect` did not make (imported video?); "
                                  "choose another output directory rather than overwrite it")
        if not (reuse and same_video(recorded, collect_record(cfg))):
            run_collect(dataclasses.replace(cfg, overwrite=True))
    return EpisodeDataset(cfg.out)


def train_lam(dataset: EpisodeDataset, out: Path, model_cfg: LAMConfig, train_cfg: LAMTrainConfig,
              log_dir: Path | None = None, reuse: bool = True, labeled: LabeledSubset | None = None,
              head_cfg: ActionHeadConfig | None = None) -> tuple[LatentActionModel, dict]:
    """Train the LAM on the dataset's frames (:func:`lapo.lam.train_lam`; with ``labeled``, jointly
    with an action decoder of ``head_cfg`` on those transitions: CLAM). Reuse rule: ``out`` holds a
    LAM checkpoint with the same architecture, optimization, dataset (and labeled transitions).
    Returns ``(lam, val metrics)``."""
    from lapo.lam import lam_record
    from lapo.lam import train_lam as run

    record = lam_record(dataset, model_cfg, train_cfg, labeled, head_cfg)
    with file_lock(out):
        if reuse and train_cfg.resume == "auto" and stored_record(Path(out), "config.json") == record:
            lam = LatentActionModel.from_pretrained(out, train_cfg.device)
            return lam, lam.pretrained_meta.get("val_metrics", {})
        if not reuse:
            train_cfg = dataclasses.replace(train_cfg, resume="never")
        return run(dataset.path, out, model_cfg, train_cfg, log_dir=log_dir, labeled=labeled, head_cfg=head_cfg)


def label(lam_dir: Path, dataset: EpisodeDataset, out: Path, reuse: bool = True, device: str = "auto"):
    """Latent actions for every transition (:func:`lapo.label.label_dataset`). Reuse rule: ``out``
    holds labels made by the same LAM checkpoint (content) of the same dataset."""
    from lapo.label import Labels, label_dataset

    record = {"lam": fingerprint(lam_dir), "dataset": dataset.fingerprint()}
    with file_lock(out):
        if not (reuse and stored_record(Path(out), "meta.json") == record):
            label_dataset(lam_dir, dataset.path, out, overwrite=True, device=device, record=record)
    return Labels(out)


def latent_bc(dataset: EpisodeDataset, labels, out: Path, policy_cfg: PolicyConfig, train_cfg: PolicyTrainConfig,
              pool: np.ndarray | None = None, writer=None, reuse: bool = True) -> Policy:
    """Latent behaviour cloning: ``π(o_t)`` regresses the IDM latent of each transition in ``pool``
    (default: every labeled transition). Reuse rule: ``out`` holds a policy trained with the same
    settings on the same labels and pool."""
    from lapo.policy import train_policy

    pool = np.flatnonzero(labels.valid) if pool is None else np.asarray(pool)
    cfg = dataclasses.replace(policy_cfg, out_dim=int(labels.meta["latent_dim"]))
    record = run_record(cfg, train_cfg, dataset=dataset.fingerprint(), labels=fingerprint(labels.path),
                        pool=pool_hash(pool))
    with file_lock(out):
        if reuse and train_cfg.resume == "auto" and stored_record(Path(out), "config.json") == record:
            return Policy.from_pretrained(out, train_cfg.device)
        if not reuse:
            train_cfg = dataclasses.replace(train_cfg, resume="never")
        policy = train_policy(dataset.frames, pool, np.asarray(labels.latents[pool]), cfg, train_cfg, "mse", writer,
                              "latent_policy", out_dir=out, record=record)
        _save_main(policy, out, record=record, labels=str(labels.path))
    return policy


def behaviour_cloning(dataset: EpisodeDataset, indices: np.ndarray, actions: np.ndarray, coding: ActionCoding,
                      policy_cfg: PolicyConfig, train_cfg: PolicyTrainConfig, out: Path | None = None,
                      writer=None, tag: str = "bc", reuse: bool = True):
    """BC on true (or pseudo-) actions at frame ``indices`` -> an :class:`lapo.agent.Agent` without
    head. With ``out`` it is saved there, resumable, and reused when trained with the same settings
    on the same dataset, indices and actions. Its callers decide which actions it may read."""
    from lapo.agent import Agent
    from lapo.policy import train_policy

    cfg = dataclasses.replace(policy_cfg, out_dim=coding.out_dim)
    record = run_record(cfg, train_cfg, dataset=dataset.fingerprint(), indices=pool_hash(indices),
                        actions=hashlib.sha256(np.ascontiguousarray(actions).tobytes()).hexdigest()[:16],
                        coding=coding) if out else None
    with file_lock(out):
        if (out is not None and reuse and train_cfg.resume == "auto"
                and stored_record(Path(out), "config.json") == record):
            return Agent.from_pretrained(out, train_cfg.device)
        if not reuse:
            train_cfg = dataclasses.replace(train_cfg, resume="never")
        policy = train_policy(dataset.frames, indices, actions, cfg, train_cfg, coding, writer, tag, out_dir=out,
                              record=record)
        agent = Agent(policy, coding=coding)
        if out is not None:
            _save_main(agent, out, record=record)
    return agent


def fit_head(policy: Policy, dataset: EpisodeDataset, labels, subset: LabeledSubset, head_cfg: ActionHeadConfig,
             head_input: str = "policy", seed: int = 0, out: Path | None = None,
             tune: PolicyTrainConfig | None = None):
    """Fit the k-shot action head on the labeled subset (the only true actions a latent agent sees)
    and compose ``head ∘ policy`` -> :class:`lapo.agent.Agent` (saved to ``out`` when given). Fast
    (seconds): always recomputed. ``labels`` (the dataset's) are read only for ``head_input="idm"``.
    With ``tune``, the agent is then fine-tuned end to end on the same subset (:func:`tune_agent`)
    before it is saved.

    Raises:
        ValueError: the dataset records no action space, or ``head_input="idm"`` without labels of
            this dataset and of the policy's latent size.
    """
    from lapo.agent import Agent
    from lapo.decoder import fit_action_head, head_latents

    if dataset.action_space is None:
        raise ValueError(f"{dataset.path} records no action space (meta.json action_space); re-collect it")
    latent_dim = policy.cfg.out_dim
    if head_input == "idm" and (labels is None or len(labels.valid) != len(dataset)
                                or int(labels.meta["latent_dim"]) != latent_dim):
        raise ValueError(f"head_input 'idm' needs the labels of {dataset.path} made by the policy's LAM "
                         f"(latent dim {latent_dim}); got {getattr(labels, 'path', None)}: label the dataset with "
                         "`lapo label` and pass --labels")
    cfg = dataclasses.replace(head_cfg, latent_dim=latent_dim)
    latents = head_latents(head_input, policy, dataset.frames, labels.latents if labels is not None else None,
                           subset.indices)
    head = fit_action_head(latents, subset.actions, cfg, space_to_json(dataset.action_space), seed,
                           device=next(policy.parameters()).device)
    agent = Agent(policy, head)
    if tune is not None:
        agent = tune_agent(agent, dataset, subset, tune)
    if out is not None:
        _save_main(agent, out, k=len(subset.indices), labeled_indices_seed=subset.seed, head_input=head_input,
                   labels=str(labels.path) if labels is not None else None,
                   tune_steps=tune.steps if tune is not None else 0)
    return agent


def tune_agent(agent, dataset: EpisodeDataset, subset: LabeledSubset, train_cfg: PolicyTrainConfig, writer=None,
               tag: str = "tune"):
    """Fine-tune a whole latent agent (policy and head, end to end) on the k labeled transitions
    with the BC loss of its action coding: BC on the k labels, started from the agent instead of
    from scratch (pretrain on the video, then fine-tune on the labels; the offline counterpart of
    LAPO §3.4's RL fine-tuning). Returns a tuned copy; ``agent`` itself is left unchanged (it may
    be the shared latent policy of other methods). Not saved here (``fit_head(out=...)`` and the
    benchmark's ``ours`` row save what they tune).

    Raises:
        ValueError: the agent has no head (a BC agent) or the subset is empty.
    """
    import copy

    from lapo.policy import fit_network

    if agent.head is None:
        raise ValueError("tune_agent fine-tunes a latent agent (policy + head); this one has no head")
    tuned = copy.deepcopy(agent).train()
    return fit_network(tuned, lambda i: np.asarray(dataset.frames[i]), subset.indices, subset.actions,
                       train_cfg, tuned.coding, writer, tag)


def evaluate(act, env_name: str, episodes: int, distribution_mode: str = "easy", seed: int = 0,
             record: bool = False, desc: str = "evaluate"):
    """Returns on unseen Procgen levels (:func:`lapo.evaluate.evaluate`); always recomputed. For
    Meta-World tasks see :func:`lapo.evaluate.evaluate_metaworld`."""
    from lapo.evaluate import evaluate as run

    return run(act, env_name, episodes, distribution_mode, seed=seed, record=record, desc=desc)


def _save_main(model, out: Path, **extra) -> None:
    """``model.save_pretrained(out, **extra)`` on rank 0 only (torchrun)."""
    from lapo.training import is_main_process

    if is_main_process():
        model.save_pretrained(out, **extra)
