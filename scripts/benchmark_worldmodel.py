"""World-model benchmark: tokenizer, dynamics vs copy-last-frame, ΔtPSNR, speed, action recovery, keys.

    python -m scripts.benchmark_worldmodel --world-model runs/worldmodel     # prints a table, writes JSON

Everything is measured on held-out episodes of the world model's own video (the tokenizer's episode
split): tokenizer PSNR/SSIM/codebook usage; dynamics PSNR at t = 1..H from ``prompt_frames`` true
frames with the latent actions the LAM infers from the true clip, against copy-last-frame in the
same run; ΔtPSNR (inferred minus random actions drawn by code frequency) with a bootstrap CI over
clips; interactive generation speed (frames/s of :class:`worldmodel.model.Dream` at the same
MaskGIT steps and model, fp32, plus bf16 where the CPU has native bf16); closed-loop action
recovery of random actions; and, for the README's key table, the true-action distribution of the
transitions the LAM gave each latent action. With ``--compare-action-modes N`` it also trains the
dynamics model with additive and with prepended action embeddings for N steps each on the same
tokens and reports both (the measurement behind ``DynamicsConfig.action_mode``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# Procgen's 15 buttons (procgen/env.py: combos of LEFT/RIGHT × DOWN/UP, then D A W S Q E)
PROCGEN_BUTTONS = [("LEFT", "DOWN"), ("LEFT",), ("LEFT", "UP"), ("DOWN",), (), ("UP",), ("RIGHT", "DOWN"), ("RIGHT",),
                   ("RIGHT", "UP"), ("D",), ("A",), ("W",), ("S",), ("Q",), ("E",)]


@dataclass
class Args:
    world_model: Path = Path("runs/worldmodel")
    """A ``lapo wm train`` run directory (with lam/ and meta.json naming its dataset)."""
    out: Path = Path("docs/benchmark_worldmodel.json")
    """JSON output (a markdown table goes beside it, .md)."""
    clips: int = 64
    """Held-out clips for the dynamics metrics."""
    prompt_frames: int = 3
    """True frames given as the prompt."""
    horizon: int = 4
    """Generated frames per clip (PSNR at t = 1..horizon)."""
    random_draws: int = 2
    """Random-action sequences per clip for ΔtPSNR."""
    steps: int = 8
    """MaskGIT steps for every quality and speed figure."""
    temperature: float = 1.0
    """Token sampling temperature for every figure (0 = argmax)."""
    speed_frames: int = 60
    """Frames generated for the speed measurement (after 5 warm-up frames)."""
    recovery_episodes: int = 8
    """Closed-loop episodes of random latent actions for action recovery."""
    recovery_length: int = 32
    """Generated frames per closed-loop episode."""
    compare_action_modes: int = 0
    """If > 0: train additive and prepended dynamics for this many steps each and compare."""
    compare_runs: tuple[Path, ...] = ()
    """Other ``lapo wm train`` runs on the same video, scored on the same held-out clips beside this
    one (e.g. a LAM co-trained with the dynamics against one trained before it)."""
    seed: int = 0


def bootstrap_mean_ci(x: np.ndarray) -> list[float]:
    from lapo.stats import bootstrap_ci

    return list(bootstrap_ci([np.asarray(x, float)]))


def speed(wm, prompt: np.ndarray, steps: int, temperature: float, frames: int, precision: str) -> float:
    """Frames/s of Dream.step (sampling + decoding) at batch 1 with ``wm.precision = precision``, the
    steps inside ``wm.autocast()`` as ``lapo wm generate`` runs them (``wm.precision`` is restored)."""
    kept, wm.precision = wm.precision, precision
    try:
        with wm.autocast():
            dream = wm.dream(prompt, steps, temperature)
            for a in range(5):
                dream.step(a % wm.num_actions)
            t0 = time.perf_counter()
            for i in range(frames):
                dream.step(i % wm.num_actions)
            return frames / (time.perf_counter() - t0)
    finally:
        wm.precision = kept


def keys_table(codes: np.ndarray, actions: np.ndarray, valid: np.ndarray, num_actions: int) -> list[dict]:
    """For each latent action: its share of transitions and the fraction of them whose true Procgen
    action holds LEFT, RIGHT, UP, DOWN, or none of the four."""
    rows = []
    for a in range(num_actions):
        sel = actions[valid & (codes == a)]
        row = {"latent_action": a, "key": str(a + 1), "share": float(len(sel) / max(1, valid.sum()))}
        for button in ("LEFT", "RIGHT", "UP", "DOWN"):
            row[button] = float(np.mean([button in PROCGEN_BUTTONS[int(x)] for x in sel])) if len(sel) else 0.0
        row["none"] = float(np.mean([not set(PROCGEN_BUTTONS[int(x)]) & {"LEFT", "RIGHT", "UP", "DOWN"}
                                     for x in sel])) if len(sel) else 0.0
        rows.append(row)
    return rows


def dynamics_rows(wm, ds, clips: np.ndarray, probs: np.ndarray, args: Args) -> list[dict]:
    """Per horizon step t: mean PSNR with inferred / random / copy-last frames, ΔtPSNR and the margin
    over copy-last, each with a bootstrap 95% CI over clips."""
    from worldmodel.evaluate import dynamics_psnr

    d = dynamics_psnr(wm, ds.frames, clips, args.prompt_frames, probs, args.steps, args.temperature,
                      args.random_draws, args.seed)
    rows = []
    for t in range(args.horizon):
        delta = d["inferred"][:, t] - d["random"][:, t]
        rows.append({"t": t + 1, "psnr_inferred": float(d["inferred"][:, t].mean()),
                     "psnr_random": float(d["random"][:, t].mean()),
                     "psnr_copy_last": float(d["copy_last"][:, t].mean()),
                     "delta_t_psnr": float(delta.mean()), "delta_t_psnr_ci95": bootstrap_mean_ci(delta),
                     "vs_copy_last": float((d["inferred"][:, t] - d["copy_last"][:, t]).mean()),
                     "vs_copy_last_ci95": bootstrap_mean_ci(d["inferred"][:, t] - d["copy_last"][:, t])})
    return rows


def compare_action_modes(run: Path, wm, ds, codes: np.ndarray, clips: np.ndarray, probs: np.ndarray,
                         args: Args) -> dict:
    """The run's dynamics config with ``add`` and with ``prepend``, each trained for
    ``args.compare_action_modes`` steps on the run's tokens and labels with the run's training
    settings and seed, scored by held-out masked-token loss/accuracy and by the same dynamics PSNR
    rows (ΔtPSNR, vs copy-last) as the run's model, on the same clips. The run's own dynamics stands
    for its mode when it was trained for exactly that many steps with that seed (not trained twice)."""
    from worldmodel.dynamics import DynamicsTrainConfig, train_dynamics
    from worldmodel.model import WorldModel

    steps, base = args.compare_action_modes, wm.dynamics
    base_train = base.pretrained_meta["train_config"]
    # threads 0: this process's torch threads (OMP_NUM_THREADS), not the run's
    train_cfg = DynamicsTrainConfig(**{**base_train, "steps": steps, "seed": args.seed, "threads": 0})
    tokens = np.load(run / "tokens" / "tokens.npy", mmap_mode="r")
    out = {}
    for mode in ("add", "prepend"):
        t0 = time.perf_counter()
        if mode == base.cfg.action_mode and (base_train["steps"], base_train["seed"]) == (steps, args.seed):
            dyn, metrics, source = base, base.pretrained_meta["val_metrics"], str(run / "dynamics")
        else:
            cfg = dataclasses.replace(base.cfg, action_mode=mode)
            dyn, metrics = train_dynamics(ds.path, tokens, codes, run / "ablation" / mode, cfg, train_cfg,
                                          record={"ablation": mode, "steps": steps})
            source = str(run / "ablation" / mode)
        rows = dynamics_rows(WorldModel(wm.tokenizer, dyn.eval(), wm.lam), ds, clips, probs, args)
        out[mode] = {**metrics, "model": source, "dynamics": rows, "s": round(time.perf_counter() - t0, 1)}
    return out


def run_actions(run: Path, wm):
    """A run's labels, the world model's action id of every transition, and the action frequencies."""
    from lapo.label import Labels
    from worldmodel.model import label_actions

    labels = Labels(run / "labels")
    codes = label_actions(labels, wm.lam)
    return labels, codes, np.bincount(codes[labels.valid], minlength=wm.num_actions) / labels.valid.sum()


def run_summary(run: Path, wm, rows: list[dict]) -> dict:
    """A run's training record (LAM held-out metrics, dynamics masked-token accuracy, stage times and
    whether the LAM was co-trained) with its dynamics PSNR rows, for :attr:`Args.compare_runs`."""
    meta = json.loads((run / "meta.json").read_text())
    return {"cotrained_lam": bool(meta["config"].get("cotrain_lam", False)), "lam_val": meta["lam_val"],
            "dynamics_val": {k: v for k, v in meta["dynamics_val"].items() if not k.startswith("lam_")},
            "timings_s": meta["timings_s"], "dynamics": rows}


def main(args: Args) -> dict:
    from envs.dataset import EpisodeDataset
    from envs.io import atomic_write_text
    from lapo.training import cpu_has_native_bf16
    from worldmodel.evaluate import action_recovery, heldout_clips
    from worldmodel.model import WorldModel
    from worldmodel.tokenizer import frame_split, reconstruction_metrics

    run = Path(args.world_model)
    wm = WorldModel.load(run)
    meta = json.loads((run / "meta.json").read_text())
    ds = EpisodeDataset(meta["dataset"])
    for other in map(Path, args.compare_runs):  # checked before any measurement
        if Path(json.loads((other / "meta.json").read_text())["dataset"]).resolve() != Path(ds.path).resolve():
            raise ValueError(f"{other} was trained on another video than {run} ({ds.path}): compare runs "
                             "trained on the same dataset (`lapo wm train --dataset`)")
    tok_train = wm.tokenizer.pretrained_meta["train_config"]
    _, val_f = frame_split(ds, tok_train["val_fraction"], tok_train["seed"])
    result = {"world_model": str(run), "dataset": str(ds.path), "heldout_frames": int(len(val_f)),
              "steps": args.steps, "temperature": args.temperature, "prompt_frames": args.prompt_frames,
              "cpu_native_bf16": cpu_has_native_bf16(), "threads": torch.get_num_threads()}
    # --- tokenizer ---
    pick = val_f[np.linspace(0, len(val_f) - 1, min(len(val_f), 4096)).astype(int)]
    result["tokenizer"] = reconstruction_metrics(wm.tokenizer, ds.frames[pick])
    result["tokenizer"]["num_codes"] = wm.tokenizer.cfg.num_codes
    # --- dynamics vs copy-last, ΔtPSNR ---
    labels, codes, probs = run_actions(run, wm)
    clips = heldout_clips(ds, val_f, args.clips, args.prompt_frames, args.horizon, args.seed)
    result["dynamics"] = dynamics_rows(wm, ds, clips, probs, args)
    result["action_distribution"] = probs.tolist()
    # --- speed ---
    prompt = np.asarray(ds.frames[clips[0, args.prompt_frames - 1]])
    result["speed_fps"] = {"fp32": speed(wm, prompt, args.steps, args.temperature, args.speed_frames, "fp32")}
    if cpu_has_native_bf16():
        result["speed_fps"]["bf16"] = speed(wm, prompt, args.steps, args.temperature, args.speed_frames, "bf16")
    # --- closed-loop action recovery of random actions ---
    rng = np.random.default_rng(args.seed)
    accs = [action_recovery(wm, np.asarray(ds.frames[clips[e % len(clips), 0]]),
                            lambda f: int(rng.choice(wm.num_actions, p=probs)), args.recovery_length, args.steps,
                            args.temperature, seed=args.seed + e)["accuracy"] for e in range(args.recovery_episodes)]
    result["action_recovery_random"] = {"accuracy": float(np.mean(accs)), "ci95": bootstrap_mean_ci(accs),
                                        "chance": float((probs ** 2).sum())}
    # --- what each key does ---
    if ds.has_actions and getattr(ds.action_space, "n", None) == len(PROCGEN_BUTTONS):  # a Procgen video
        result["keys"] = keys_table(codes, np.asarray(ds.oracle_actions()), labels.valid, wm.num_actions)
    if args.compare_action_modes:
        result["action_modes"] = compare_action_modes(run, wm, ds, codes, clips, probs, args)
    if args.compare_runs:
        result["runs"] = {str(run): run_summary(run, wm, result["dynamics"])}
        for other in map(Path, args.compare_runs):
            wm_o = WorldModel.load(other)
            probs_o = run_actions(other, wm_o)[2]
            result["runs"][str(other)] = run_summary(other, wm_o, dynamics_rows(wm_o, ds, clips, probs_o, args))
    table = format_table(result)
    print(table)
    atomic_write_text(args.out, json.dumps(result, indent=2))
    atomic_write_text(Path(args.out).with_suffix(".md"), table + "\n")
    return result


def format_table(r: dict) -> str:
    tok = r["tokenizer"]
    lines = [f"Tokenizer (held-out frames): PSNR {tok['psnr']:.2f} dB, SSIM {tok['ssim']:.3f}, perplexity "
             f"{tok['perplexity']:.0f} of {tok['num_codes']} codes, {tok['codes_used']} used, {tok['dead_codes']} dead",
             "",
             f"Dynamics ({r['prompt_frames']} prompt frames, MaskGIT {r['steps']} steps, temperature {r['temperature']}):",
             "| t | PSNR inferred actions | PSNR random actions | PSNR copy-last | ΔtPSNR [95% CI] | vs copy-last [95% CI] |",
             "|---|---|---|---|---|---|"]
    for row in r["dynamics"]:
        lo, hi = row["delta_t_psnr_ci95"]
        clo, chi = row["vs_copy_last_ci95"]
        lines.append(f"| {row['t']} | {row['psnr_inferred']:.2f} | {row['psnr_random']:.2f} | {row['psnr_copy_last']:.2f} "
                     f"| {row['delta_t_psnr']:+.2f} [{lo:+.2f}, {hi:+.2f}] | {row['vs_copy_last']:+.2f} [{clo:+.2f}, {chi:+.2f}] |")
    sp = ", ".join(f"{k} {v:.1f}" for k, v in r["speed_fps"].items())
    rec = r["action_recovery_random"]
    lines += ["", f"Interactive generation: {sp} frames/s (batch 1, {r['threads']} threads, same steps and model)",
              f"Closed-loop action recovery, random latent actions: {rec['accuracy']:.2f} "
              f"[{rec['ci95'][0]:.2f}, {rec['ci95'][1]:.2f}] (chance {rec['chance']:.2f})"]
    if "keys" in r:
        lines += ["", "| key | latent action | share | LEFT | RIGHT | UP | DOWN | none |", "|---|---|---|---|---|---|---|---|"]
        for k in r["keys"]:
            lines.append(f"| {k['key']} | {k['latent_action']} | {k['share']:.2f} | {k['LEFT']:.2f} | {k['RIGHT']:.2f} "
                         f"| {k['UP']:.2f} | {k['DOWN']:.2f} | {k['none']:.2f} |")
    if "action_modes" in r:
        H = r["dynamics"][-1]["t"]
        lines += ["", f"| action embedding | held-out loss | masked-token accuracy | copy-last accuracy "
                      f"| ΔtPSNR t=1 | ΔtPSNR t={H} | vs copy-last t={H} |", "|---|---|---|---|---|---|---|"]
        for mode, m in r["action_modes"].items():
            first, last = m["dynamics"][0], m["dynamics"][-1]
            cells = [f"{row[k]:+.2f} [{row[k + '_ci95'][0]:+.2f}, {row[k + '_ci95'][1]:+.2f}]"
                     for row, k in ((first, "delta_t_psnr"), (last, "delta_t_psnr"), (last, "vs_copy_last"))]
            lines.append(f"| {mode} | {m['loss']:.3f} | {m['masked_accuracy']:.3f} | {m['copy_accuracy']:.3f} | "
                         + " | ".join(cells) + " |")
    if "runs" in r:
        H = r["dynamics"][-1]["t"]
        lines += ["", f"| run | LAM | LAM FDM loss / copy-last | perplexity | probe acc. | masked-token acc. (copy) "
                      f"| ΔtPSNR t=1 | ΔtPSNR t={H} | vs copy-last t={H} | LAM + dynamics train s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, m in r["runs"].items():
            lam, dyn, first, last = m["lam_val"], m["dynamics_val"], m["dynamics"][0], m["dynamics"][-1]
            cells = [f"{row[k]:+.2f} [{row[k + '_ci95'][0]:+.2f}, {row[k + '_ci95'][1]:+.2f}]"
                     for row, k in ((first, "delta_t_psnr"), (last, "delta_t_psnr"), (last, "vs_copy_last"))]
            train_s = m["timings_s"].get("lam", 0) + m["timings_s"].get("dynamics", 0)
            lines.append(f"| {name} | {'co-trained' if m['cotrained_lam'] else 'before dynamics'} "
                         f"| {lam['fdm_loss']:.5f} / {lam['copy_last_loss']:.5f} | {lam['perplexity']:.2f} "
                         f"| {lam.get('probe_accuracy', float('nan')):.3f} "
                         f"| {dyn['masked_accuracy']:.3f} ({dyn['copy_accuracy']:.3f}) | " + " | ".join(cells)
                         + f" | {train_s:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
