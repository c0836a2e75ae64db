"""``lapo wm ...``: the Genie-style world model (see :mod:`worldmodel`).

    lapo wm train cpu                                   # tokenizer, LAM, dynamics on CoinRun video (resumable)
    lapo wm generate --prompt any.png --actions 0,3,3,1,1,1 --out runs/wm/dream   # -> dream.mp4 + dream.gif
    lapo wm play [--prompt img.png] [--world-model runs/worldmodel]   # keys 1..9 act, R records, Esc quits
    lapo wm dream --agent runs/wm_policy [--prompt img.png]   # the latent policy acts in imagination

Without ``--world-model`` the world model shipped with the package is used.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Sampling:
    """How frames are sampled (MaskGIT)."""

    steps: int = 2
    """MaskGIT iterations per frame (Genie: 25). On 2 AVX2 cores the shipped model runs 18.9 / 13.1 /
    6.0 frames/s at 2 / 4 / 8 steps with PSNR at t=1 of 20.4 / 20.8 / 20.9 dB (docs/benchmark_worldmodel*.md);
    on 2 AVX-512-bf16 cores the shipped ``cpu`` preset runs 51.1 (fp32) / 88.0 (bf16) frames/s at 2 steps."""
    precision: str = "auto"
    """``auto`` (bf16 only where the CPU/GPU has it natively and measured faster; printed), ``fp32`` or ``bf16``."""
    temperature: float = 1.0
    """Token sampling temperature (0 = argmax)."""
    cfg_scale: float = 1.0
    """Classifier-free guidance on the latent action (1 = off; > 1 follows the action more, at two
    dynamics passes per MaskGIT step; 4 raised the LAM's recovery of random actions from 0.19 to 0.32)."""
    seed: int = 0
    """Seed of the token draws."""


@dataclass
class GenerateArgs:
    prompt: Path
    """Any image (png, jpg, ...): cropped to a centred square and resized like ``lapo import-video``."""
    actions: str = "0,0,0,0,0,0,0,0"
    """Comma-separated latent actions, one per generated frame (0..A-1; A = 9 for the shipped model)."""
    out: Path = Path("runs/wm_generate/dream")
    """Output stem: writes OUT.mp4 and OUT.gif (prompt first, then the generated frames)."""
    world_model: Path | None = None
    """World-model directory (``lapo wm train``'s run_dir); None = the shipped CoinRun model."""
    mode: str = "crop"
    """Prompt geometry: crop, letterbox or resize."""
    sample: Sampling = field(default_factory=Sampling)
    fps: int = 10
    """Frames per second of the MP4 and GIF."""
    scale: int = 4
    """Upscaling of the written frames (nearest)."""


def parse_actions(text: str, num_actions: int) -> list[int]:
    """``"0,3,3,1"`` → ``[0, 3, 3, 1]``.

    Raises:
        ValueError: an entry that is not an integer in ``[0, num_actions)`` (named), or none at all.
    """
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item.lstrip("-").isdigit() or not 0 <= int(item) < num_actions:
            raise ValueError(f"--actions entry {item!r} is not a latent action of this world model; "
                             f"use comma-separated integers in 0..{num_actions - 1}")
        out.append(int(item))
    return out


def generate_main(args: GenerateArgs) -> tuple[Path, Path]:
    from worldmodel.evaluate import generate
    from worldmodel.model import load_prompt, resolve_world_model, write_clip

    wm = resolve_world_model(args.world_model)
    actions = parse_actions(args.actions, wm.num_actions)
    prompt = load_prompt(args.prompt, wm.image_size, args.mode)
    s = args.sample
    wm.choose_precision(s.precision, s.steps)
    frames = generate(wm, prompt, np.asarray(actions), s.steps, s.temperature, s.seed, s.cfg_scale)
    paths = write_clip(np.concatenate([prompt[None], frames]), args.out, args.fps, args.scale)
    print(f"wrote {paths[0]} and {paths[1]} ({len(actions)} generated frames)")
    return paths


@dataclass
class PlayArgs:
    prompt: Path | None = None
    """Starting image; None = the prompt frame shipped with the world model."""
    world_model: Path | None = None
    """World-model directory; None = the shipped CoinRun model."""
    record: Path = Path("runs/wm_play/session")
    """Where R (start/stop recording) writes RECORD.mp4 and RECORD.gif."""
    idle_action: int = -1
    """Latent action while no number key is held (-1 = repeat the last one)."""
    fps: int = 15
    """Frame-rate cap of the window."""
    scale: int = 8
    """Window pixels per model pixel."""
    max_frames: int = 0
    """Stop after this many generated frames (0 = until Esc or the window closes)."""
    scripted_keys: str | None = None
    """Instead of the keyboard: comma-separated keys, one per frame (1..9, r, q), e.g. for tests
    with SDL_VIDEODRIVER=dummy."""
    mode: str = "crop"
    sample: Sampling = field(default_factory=Sampling)


def play_main(args: PlayArgs) -> dict:
    """The pygame loop: each frame, the held number key k chooses latent action k-1."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    from worldmodel.model import load_prompt, resolve_world_model, shipped_world_model, write_clip

    wm = resolve_world_model(args.world_model)
    A = wm.num_actions
    if args.idle_action >= A:
        raise ValueError(f"idle_action {args.idle_action} is outside [-1, {A}); choose -1..{A - 1}")
    prompt_path = args.prompt or (Path(args.world_model or shipped_world_model()) / "prompt.png")
    prompt = load_prompt(prompt_path, wm.image_size, args.mode)
    script = None
    if args.scripted_keys is not None:
        script = [k.strip().lower() for k in args.scripted_keys.split(",") if k.strip()]
        bad = [k for k in script if k not in ("r", "q") and not (k.isdigit() and 1 <= int(k) <= A)]
        if bad:
            raise ValueError(f"scripted keys {bad} are not keys of this world model; use 1..{A}, r, q")
    s = args.sample
    wm.choose_precision(s.precision, s.steps)
    dream = wm.dream(prompt, s.steps, s.temperature, s.cfg_scale, s.seed)
    pygame.init()
    size = wm.image_size * args.scale
    screen = pygame.display.set_mode((size, size))
    pygame.display.set_caption(f"lapo wm play: keys 1..{A} act, R records, Esc quits")
    clock = pygame.time.Clock()
    action, recording, recorded, written, step = max(args.idle_action, 0), False, [], [], 0
    try:
        while True:
            key = None
            if script is not None:
                if step >= len(script):
                    break
                key = script[step]
            for event in pygame.event.get():
                if event.type == pygame.QUIT or (event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE):
                    key = "q"
                elif event.type == pygame.KEYDOWN and event.key == pygame.K_r:
                    key = "r"
            if key == "q":
                break
            if key == "r":
                recording = not recording
                if not recording and recorded:
                    written.append(write_clip(recorded, args.record, args.fps, 4))
                    recorded = []
            pressed = pygame.key.get_pressed() if script is None else None
            held = [k for k in range(A) if pressed[pygame.K_1 + k]] if pressed is not None else []
            if key is not None and key.isdigit():
                action = int(key) - 1
            elif held:
                action = held[0]
            elif args.idle_action >= 0:
                action = args.idle_action
            frame = dream.step(action)
            if recording:
                recorded.append(frame)
            surface = pygame.surfarray.make_surface(np.repeat(np.repeat(frame, args.scale, 0), args.scale, 1).swapaxes(0, 1))
            screen.blit(surface, (0, 0))
            pygame.display.flip()
            clock.tick(args.fps)
            step += 1
            if args.max_frames and step >= args.max_frames:
                break
    finally:
        if recording and recorded:
            written.append(write_clip(recorded, args.record, args.fps, 4))
        pygame.quit()
    for mp4, gif in written:
        print(f"recorded {mp4} and {gif}")
    return {"frames": step, "actions": dream.taken, "recordings": [str(p) for pair in written for p in pair]}


@dataclass
class DreamArgs:
    agent: Path
    """A latent policy (``lapo train-policy`` output) or an agent (``lapo fit-head`` output): its
    latent policy acts; its latents are mapped to the world model's latent actions by a classifier
    fitted on the world model's training video (policy latents of o_t → the LAM's code of o_t → o_{t+1})."""
    world_model: Path | None = None
    """World-model directory with lam/ and its dataset (``lapo wm train``'s run_dir); None = shipped."""
    dataset: Path | None = None
    """The world model's training video for the mapping (default: from its meta.json)."""
    prompt: Path | None = None
    """Starting image; None = the prompt frame shipped with the world model."""
    length: int = 64
    """Generated frames per episode."""
    episodes: int = 8
    """Dream episodes (each measured; the random-action baseline plays as many)."""
    map_transitions: int = 20_000
    """Transitions of the video used to fit the latent → world-model-action mapping."""
    deterministic: bool = True
    """The agent takes its most likely latent action (``--no-deterministic``: samples it). Greedy and
    with guidance 4 (the default ``--sample.cfg-scale`` here) its actions were recovered on 0.51 of
    the shipped model's transitions vs 0.32 for random actions; sampling, without guidance, 0.20 vs 0.19."""
    out: Path = Path("runs/wm_dream")
    """Writes dream.gif, dream.mp4 and results.json here."""
    mode: str = "crop"
    sample: Sampling = field(default_factory=lambda: Sampling(cfg_scale=4.0))
    """Sampling as in ``generate``, but with classifier-free guidance 4 (two dynamics passes per step)."""


def dream_main(args: DreamArgs) -> dict:
    from worldmodel.dream import run_dream

    result = run_dream(args)
    print(json.dumps({k: v for k, v in result.items() if k != "per_episode"}, indent=2))
    return result


def train_main(cfg) -> dict:
    from worldmodel.pipeline import train_world_model

    out = train_world_model(cfg)
    print(json.dumps({k: out[k] for k in ("tokenizer_val", "lam_val", "dynamics_val", "timings_s")}, indent=2))
    return out
