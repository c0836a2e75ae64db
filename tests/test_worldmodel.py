"""World model: ST-transformer causality, tokenizer metrics and exact save/load, MaskGIT training
and sampling, the whole `lapo wm train` chain on a moving square (its prediction must follow the
latent action; an untrained model must not), generate/play/dream CLIs, presets, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from lapo.lam import LAMConfig, LAMTrainConfig
from worldmodel.dynamics import Dynamics, DynamicsConfig, DynamicsTrainConfig, clip_actions, clip_indices
from worldmodel.model import WorldModel, load_prompt
from worldmodel.pipeline import PRESETS, WorldModelConfig, train_world_model
from worldmodel.st import STTransformer
from worldmodel.tokenizer import (STViViTConfig, STViViTTokenizer, Tokenizer, TokenizerConfig, TokenizerTrainConfig,
                                  psnr, reconstruction_metrics, ssim, train_tokenizer)

TINY_TOK = TokenizerConfig(widths=(8, 16, 16), code_dims=2, levels=5)


def test_st_transformer_is_causal_in_time():
    """Changing frame t+1 never changes outputs at frames <= t; it does change frame t+1's."""
    torch.manual_seed(0)
    st = STTransformer(dim=32, depth=2, heads=4, tokens=6, max_frames=5).eval()
    x = torch.randn(2, 5, 6, 32)
    y = x.clone()
    y[:, 3:] += torch.randn(2, 2, 6, 32)
    with torch.no_grad():
        a, b = st(x), st(y)
    torch.testing.assert_close(a[:, :3], b[:, :3], rtol=0, atol=1e-6)
    assert (a[:, 3:] - b[:, 3:]).abs().max() > 1e-2
    # and spatial attention mixes tokens within a frame: changing one token changes the others
    z = x.clone()
    z[:, 1, 0] += torch.randn(32)  # (a constant shift would vanish in the LayerNorm)
    with torch.no_grad():
        c = st(z)
    assert (c[:, 1, 1:] - a[:, 1, 1:]).abs().max() > 1e-3


def test_tokenizer_shapes_metrics_and_exact_roundtrip(tmp_path):
    tok = Tokenizer(TINY_TOK).eval()
    frames = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)
    codes = tok.encode(frames)
    assert codes.shape == (3, 8, 8) and codes.dtype == torch.int64
    assert 0 <= int(codes.min()) and int(codes.max()) < TINY_TOK.num_codes == 25
    assert tok.decode(codes).shape == (3, 3, 64, 64)
    tok.save_pretrained(tmp_path / "tok")
    loaded = Tokenizer.from_pretrained(tmp_path / "tok")
    torch.testing.assert_close(loaded.decode(loaded.encode(frames)), tok.decode(codes), rtol=0, atol=0)
    # the decoder inverts the FSQ code table: encode -> decode -> encode is stable on the code vectors
    assert torch.equal(tok.fsq(tok.code_vectors)[1][:, 0], torch.arange(25))
    with pytest.raises(ValueError, match=r"\(B, 64, 64, 3\)"):
        tok.encode(torch.zeros(1, 32, 32, 3, dtype=torch.uint8))


def test_st_vivit_tokenizer_is_causal_round_trips_and_learns(square_dataset, tmp_path):
    """Genie's ST-ViViT tokenizer (the comparison variant): a frame's codes and reconstruction do
    not depend on later frames, save/load is exact, and training on clips lifts held-out PSNR."""
    from envs.dataset import EpisodeDataset
    from worldmodel.tokenizer import frame_split

    torch.manual_seed(0)
    cfg = STViViTConfig(patch=8, dim=32, depth=1, heads=2, clip_frames=3, code_dims=2, levels=5)
    tok = STViViTTokenizer(cfg).eval()
    clips = torch.randint(0, 256, (2, 3, 64, 64, 3), dtype=torch.uint8)
    codes = tok.encode(clips)
    assert codes.shape == (2, 3, 8, 8) and int(codes.max()) < 25 and tok.decode(codes).shape == (2, 3, 3, 64, 64)
    assert tok.encode(clips[:, 0]).shape == (2, 8, 8) and tok.decode(codes[:, 0]).shape == (2, 3, 64, 64)
    later = clips.clone()
    later[:, 2] = 255 - later[:, 2]
    assert torch.equal(tok.encode(later)[:, :2], codes[:, :2]) and not torch.equal(tok.encode(later)[:, 2], codes[:, 2])
    tok.save_pretrained(tmp_path / "vivit")
    loaded = STViViTTokenizer.from_pretrained(tmp_path / "vivit")
    torch.testing.assert_close(loaded.decode(loaded.encode(clips)), tok.decode(codes), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"T <= 3"):
        tok.encode(torch.zeros(1, 4, 64, 64, 3, dtype=torch.uint8))
    # training on clips of the moving-square video: held-out PSNR (each frame after its 2 predecessors) rises
    ds = EpisodeDataset(square_dataset)
    val_f = frame_split(ds, 0.05, 0)[1][:64]
    clips_val = np.maximum(val_f[:, None] + np.arange(-2, 1), ds.episode_starts[ds.episode_index[val_f]][:, None])
    before = reconstruction_metrics(tok, ds.frames, clips_MT=clips_val)["psnr"]
    _, after = train_tokenizer(square_dataset, tmp_path / "trained", cfg, TokenizerTrainConfig(
        steps=60, batch_size=24, lr=3e-3, warmup=5, eval_every=60, val_frames=64, threads=1))
    print("st-vivit psnr before/after", before, after["psnr"])
    assert after["psnr"] > before + 5, (before, after)


def test_psnr_and_ssim_reference_values():
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    noisy = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    assert (ssim(noisy, x) < 0.95).all()
    assert torch.allclose(psnr(x * 0 + 0.5, x * 0 + 0.6), torch.full((2,), 20.0), atol=1e-4)  # mse 0.01 -> 20 dB


def test_dynamics_masks_the_last_frame_and_samples_real_tokens():
    torch.manual_seed(0)
    for mode in ("add", "prepend"):
        cfg = DynamicsConfig(num_codes=7, tokens=4, num_actions=3, context=2, dim=16, depth=1, heads=2, action_mode=mode)
        dyn = Dynamics(cfg)
        tokens = torch.randint(0, 7, (5, 3, 4))
        loss, stats = dyn(tokens, torch.randint(0, 4, (5, 3)))
        assert loss.ndim == 0 and torch.isfinite(loss) and 0 <= float(stats["copy_accuracy"]) <= 1
        # generation caches the context frames' keys/values: same logits as the full forward
        dyn.eval()
        actions = torch.randint(0, 4, (5, 3))
        full = dyn.logits(tokens, actions)
        cached = dyn.logits(tokens[:, 2:], actions[:, 2:], dyn.context(tokens[:, :2], actions[:, :2]))
        torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-5)
        out = dyn.sample(tokens[:, :2], torch.randint(0, 3, (5, 3)), steps=4, temperature=1.0)
        assert out.shape == (5, 4) and int(out.max()) < 7  # the mask id 7 never comes out
        a = dyn.sample(tokens[:, :2], torch.zeros(5, 3, dtype=torch.long), steps=3, temperature=0, cfg_scale=2.0)
        b = dyn.sample(tokens[:, :2], torch.zeros(5, 3, dtype=torch.long), steps=3, temperature=0, cfg_scale=2.0)
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="action_mode 'concat'"):
        DynamicsConfig(action_mode="concat")
    with pytest.raises(ValueError, match="2 past frames"):
        dyn.sample(tokens[:, :1], torch.zeros(5, 2, dtype=torch.long))


def test_clips_edge_pad_at_episode_start_and_actions_lead_into_frames(square_dataset):
    from envs.dataset import EpisodeDataset

    ds = EpisodeDataset(square_dataset)
    clips = clip_indices(ds, np.arange(0, 30), context=3)
    assert clips[0].tolist() == [0, 0, 0, 1]  # frame 0 is no target; frame 1's clip pads with frame 0
    assert clips[23].tolist() == [21, 22, 23, 24] and clips[24].tolist() == [25, 25, 25, 26]  # 25-frame episodes
    codes = np.arange(len(ds)) % 5
    starts = ds.episode_starts[ds.episode_index]
    acts = clip_actions(codes, clips, starts, null=9)
    assert acts[0].tolist() == [9, 9, 9, codes[0]]  # the action into frame 1 is the code of 0 -> 1


def square_world_model(square_dataset, tmp_path):
    """`lapo wm train` on the moving-square video at toy sizes (the slowest test of the suite)."""
    cfg = WorldModelConfig(
        run_dir=tmp_path / "wm", dataset=square_dataset,
        tokenizer=dataclasses.replace(TINY_TOK, res_blocks=0),
        tokenizer_train=TokenizerTrainConfig(steps=150, batch_size=32, lr=3e-3, eval_every=150, val_frames=128),
        lam=LAMConfig(idm_channels=(8, 16, 16), idm_hidden=32, widths=(8, 16, 16), latent_dim=2, fsq_levels=3,
                      groups=1),
        lam_train=LAMTrainConfig(steps=250, batch_size=32, eval_every=250, probe_k=64, lr=2e-3),
        dynamics=DynamicsConfig(context=1, dim=64, depth=2, heads=4),
        dynamics_train=DynamicsTrainConfig(steps=600, batch_size=32, lr=3e-3, warmup=20, eval_every=600),
        threads=2)
    return cfg, train_world_model(cfg)


def follows_actions(wm: WorldModel, ds, n: int = 24) -> dict[str, float]:
    """Pixel MSE (uint8 units) of the next frame generated (argmax, 4 MaskGIT steps) from a true
    frame under the latent action the LAM infers from the true transition (``inferred``), under
    each other latent action (``other``), and of copying the frame (``copy_last``)."""
    rng = np.random.default_rng(1)
    t = rng.choice(ds.transition_indices[np.isin(ds.transition_indices - 1, ds.transition_indices)], n, replace=False)
    err = {"inferred": [], "other": [], "copy_last": []}
    for i in t:
        clip = np.asarray(ds.frames[[i - 1, i, i + 1]])
        a = int(wm.infer_actions(clip)[-1])
        err["copy_last"].append(float(((clip[1].astype(float) - clip[2]) ** 2).mean()))
        for b in range(wm.num_actions):
            pred = wm.dream(clip[1], steps=4, temperature=0).step(b).astype(float)
            err["inferred" if b == a else "other"].append(float(((pred - clip[2]) ** 2).mean()))
    return {k: float(np.mean(v)) for k, v in err.items()}


def follows(err: dict[str, float]) -> bool:
    """The prediction follows the action: under the inferred action it beats copying the frame and
    is clearly closer to the truth than under the other actions."""
    return err["inferred"] < err["copy_last"] and err["inferred"] < 0.8 * err["other"]


def test_world_model_prediction_follows_the_latent_action(square_dataset, tmp_path):
    """The Jasmine #122 failure (a latent action that carries nothing about the next frame) fails
    this test; so does the same world model with its dynamics weights re-initialized. Measured with
    these settings: inferred 273 vs other actions 373 vs copy-last 405 (untrained: 626 vs 610) on an
    AVX2 CPU, 284 vs 382 vs 405 (untrained: 697 vs 662) on an AVX-512-bf16 one."""
    from envs.dataset import EpisodeDataset

    cfg, out = square_world_model(square_dataset, tmp_path)
    ds = EpisodeDataset(square_dataset)
    wm = WorldModel.load(cfg.run_dir)
    assert set(os.listdir(cfg.run_dir)) >= {"tokenizer", "lam", "dynamics", "labels", "tokens", "meta.json"}
    # the LAM's probe: > 0.9 on an AVX2 CPU, 0.73 on an AVX-512 one (fp32 arithmetic differs; majority 0.25)
    assert out["tokenizer_val"]["psnr"] > 20 and out["lam_val"]["probe_accuracy"] > 0.6
    err = follows_actions(wm, ds)
    print("moving square, trained:", err)
    assert follows(err), err
    torch.manual_seed(0)
    untrained = WorldModel(wm.tokenizer, Dynamics(wm.dynamics.cfg).eval(), wm.lam)
    err_u = follows_actions(untrained, ds)
    print("moving square, untrained dynamics:", err_u)
    assert not follows(err_u), err_u
    # rerunning reuses every finished stage (no training: same files)
    stamp = (cfg.run_dir / "dynamics" / "model.safetensors").stat().st_mtime_ns
    train_world_model(cfg)
    assert (cfg.run_dir / "dynamics" / "model.safetensors").stat().st_mtime_ns == stamp
    # the world-model benchmark runs on it; its action-embedding comparison trains only the mode the
    # run's dynamics does not stand for (its config edited here to look trained for the comparison's 5 steps)
    from scripts import benchmark_worldmodel as bench

    meta = cfg.run_dir / "dynamics" / "config.json"
    stored = json.loads(meta.read_text())
    stored["train_config"]["steps"] = 5
    meta.write_text(json.dumps(stored))
    result = bench.main(bench.Args(world_model=cfg.run_dir, out=tmp_path / "bench.json", clips=4, horizon=2,
                                   random_draws=1, steps=2, speed_frames=3, recovery_episodes=1,
                                   recovery_length=4, compare_action_modes=5))
    modes = result["action_modes"]
    assert modes["add"]["model"] == str(cfg.run_dir / "dynamics") and not (cfg.run_dir / "ablation" / "add").exists()
    assert modes["prepend"]["model"] == str(cfg.run_dir / "ablation" / "prepend")
    assert modes["add"]["dynamics"][0]["delta_t_psnr"] == result["dynamics"][0]["delta_t_psnr"]
    assert [r["t"] for r in modes["prepend"]["dynamics"]] == [1, 2]
    assert "| prepend |" in (tmp_path / "bench.md").read_text()


@pytest.fixture(scope="module")
def tiny_wm_dir(tmp_path_factory):
    """A tiny untrained world model directory (tokenizer, dynamics, lam, prompt.png) for CLI tests."""
    from PIL import Image

    from lapo.lam import LatentActionModel

    path = tmp_path_factory.mktemp("wm")
    torch.manual_seed(0)
    Tokenizer(TINY_TOK).save_pretrained(path / "tokenizer")
    Dynamics(DynamicsConfig(num_codes=25, tokens=64, num_actions=9, context=2, dim=16, depth=1, heads=2)
             ).save_pretrained(path / "dynamics")
    LatentActionModel(LAMConfig(idm_channels=(8, 16, 16), idm_hidden=32, widths=(8, 16, 16), latent_dim=2,
                                fsq_levels=3, groups=1)).save_pretrained(path / "lam")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (100, 150, 3), np.uint8)).save(path / "prompt.png")
    return path


def lapo(*args, env=None):
    return subprocess.run([sys.executable, "-m", "scripts.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, timeout=300)


def test_generate_writes_mp4_and_gif_from_any_image(tiny_wm_dir, tmp_path):
    import av

    r = lapo("wm", "generate", "--prompt", str(tiny_wm_dir / "prompt.png"), "--actions", "0,3,3,1",
             "--world-model", str(tiny_wm_dir), "--out", str(tmp_path / "clip"), "--sample.steps", "2")
    assert r.returncode == 0, r.stderr
    with av.open(str(tmp_path / "clip.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 5  # prompt + 4 generated
    assert (tmp_path / "clip.gif").stat().st_size > 0
    r = lapo("wm", "generate", "--prompt", str(tiny_wm_dir / "prompt.png"), "--actions", "0,12",
             "--world-model", str(tiny_wm_dir))
    assert r.returncode == 2 and "'12'" in r.stderr and "0..8" in r.stderr
    r = lapo("wm", "generate", "--prompt", str(tiny_wm_dir / "config.json"), "--world-model", str(tiny_wm_dir))
    assert r.returncode == 2 and "not found" in r.stderr


def test_play_runs_headless_with_scripted_keys_and_records(tiny_wm_dir, tmp_path):
    r = lapo("wm", "play", "--world-model", str(tiny_wm_dir), "--scripted-keys", "1,r,3,3,9,r,2,q,5",
             "--record", str(tmp_path / "session"), "--fps", "100", "--sample.steps", "1",
             env={"SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "session.mp4").is_file() and (tmp_path / "session.gif").is_file()
    import av

    with av.open(str(tmp_path / "session.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 4  # frames generated while recording: 3, 3, 9, r
    r = lapo("wm", "play", "--world-model", str(tiny_wm_dir), "--scripted-keys", "1,x",
             env={"SDL_VIDEODRIVER": "dummy"})
    assert r.returncode == 2 and "['x']" in r.stderr


def test_load_prompt_crops_like_import_video(tmp_path):
    from PIL import Image

    img = np.zeros((40, 80, 3), np.uint8)
    img[:, 20:60] = 200  # the centred square is all 200
    Image.fromarray(img).save(tmp_path / "p.jpg", quality=100)
    out = load_prompt(tmp_path / "p.jpg", 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8 and abs(int(out.mean()) - 200) <= 2
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match="not an image"):
        load_prompt(tmp_path / "bad.png")


def test_world_model_rejects_mismatched_parts(tiny_wm_dir):
    tok = Tokenizer.from_pretrained(tiny_wm_dir / "tokenizer")
    with pytest.raises(ValueError, match="dynamics expects 30 codes"):
        WorldModel(tok, Dynamics(DynamicsConfig(num_codes=30, tokens=64, num_actions=9, dim=16, depth=1, heads=2)))
    with pytest.raises(FileNotFoundError, match="not a world-model directory"):
        WorldModel.load(tiny_wm_dir / "tokenizer")
    wm = WorldModel.load(tiny_wm_dir)
    with pytest.raises(ValueError, match=r"latent action 9 is outside \[0, 9\)"):
        wm.dream(np.zeros((64, 64, 3), np.uint8)).step(9)


def test_generation_precision_follows_the_trainers_rule(tiny_wm_dir, monkeypatch):
    """``choose_precision`` resolves as the trainer's rule does (bf16 only where native), and a
    ``bf16`` world model samples under bf16 autocast while ``fp32`` uses none."""
    from lapo.training import bf16_is_native

    wm = WorldModel.load(tiny_wm_dir)
    assert wm.choose_precision("fp32") == "fp32"
    if bf16_is_native(wm.device):
        assert wm.choose_precision("auto", steps=1) in ("fp32", "bf16")
    else:
        assert wm.choose_precision("auto", steps=1) == "fp32"
        with pytest.raises(ValueError, match="--sample.precision fp32 or auto"):
            wm.choose_precision("bf16")
    seen, sample = [], wm.dynamics.sample
    monkeypatch.setattr(wm.dynamics, "sample", lambda *a, **k: seen.append(torch.is_autocast_enabled("cpu"))
                        or sample(*a, **k))
    prompt = np.zeros((64, 64, 3), np.uint8)
    wm.precision = "fp32"
    fp32 = wm.dream(prompt, steps=1).step(0)
    wm.precision = "bf16"
    bf16 = wm.dream(prompt, steps=1).step(0)
    assert seen == [False, True]
    assert bf16.dtype == fp32.dtype == np.uint8 and bf16.shape == fp32.shape == (64, 64, 3)


def test_genie_coinrun_preset_builds_and_trains_one_step():
    """Genie's case-study sizes build and take one optimizer step (a 2-frame clip, batch 1, CPU)."""
    cfg = PRESETS["genie-coinrun"][1]
    assert (cfg.dynamics.depth, cfg.dynamics.dim, cfg.dynamics.context + 1) == (12, 512, 16)
    assert cfg.tokenizer.grid == 16  # patch 4 at 64×64
    tok = Tokenizer(cfg.tokenizer)
    dyn = Dynamics(dataclasses.replace(cfg.dynamics, num_codes=cfg.tokenizer.num_codes, tokens=cfg.tokenizer.grid ** 2))
    opt = torch.optim.AdamW(list(tok.parameters()) + list(dyn.parameters()), 1e-4)
    _, tok_loss, _ = tok(torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8))
    dyn_loss, _ = dyn(torch.randint(0, cfg.tokenizer.num_codes, (1, 2, 256)), torch.zeros(1, 2, dtype=torch.long))
    (tok_loss + dyn_loss).backward()
    opt.step()
    assert torch.isfinite(tok_loss) and torch.isfinite(dyn_loss)


def test_dream_maps_a_latent_policy_onto_the_world_models_actions(tiny_wm_dir, square_dataset, tmp_path):
    """`lapo wm dream`: a latent policy (any latent size) acts in imagination through a mapping
    fitted on the video; action recovery is reported for it and for two random baselines, with the
    agent's paired differences."""
    from lapo.policy import Policy, PolicyConfig

    torch.manual_seed(0)
    Policy(PolicyConfig(channels=(8, 16, 16), hidden=32, out_dim=5)).save_pretrained(tmp_path / "policy")
    r = lapo("wm", "dream", "--agent", str(tmp_path / "policy"), "--world-model", str(tiny_wm_dir), "--dataset",
             str(square_dataset), "--episodes", "2", "--length", "3", "--map-transitions", "200", "--out",
             str(tmp_path / "dream"), "--sample.steps", "1", "--no-deterministic")
    assert r.returncode == 0, r.stderr
    import json

    res = json.loads((tmp_path / "dream" / "results.json").read_text())
    rec = res["action_recovery"]
    for name in ("agent", "random", "random_agent_frequencies"):
        assert rec[name]["episodes"] == 2 and 0 <= rec[name]["action_recovery"] <= 1
        assert rec[name]["action_recovery"] == pytest.approx(np.mean(res["per_episode"][name]))
    for name in ("random", "random_agent_frequencies"):
        diff = np.subtract(res["per_episode"]["agent"], res["per_episode"][name]).mean()
        assert res["agent_minus"][name]["difference"] == pytest.approx(diff)
    assert sum(res["agent_action_frequencies"]) == pytest.approx(1) and len(res["recovery_per_action_random"]) == 9
    assert not res["deterministic"] and res["sample"]["cfg_scale"] == 4.0  # dream's own default guidance
    assert (tmp_path / "dream" / "dream.gif").is_file()
    r = lapo("wm", "dream", "--agent", str(tiny_wm_dir / "lam"), "--world-model", str(tiny_wm_dir), "--dataset",
             str(square_dataset))
    assert r.returncode == 2 and "not a latent policy or agent" in r.stderr


def test_shipped_world_model_loads_and_its_actions_matter():
    """The shipped fp16 CoinRun world model loads into fp32 and generates; different latent actions
    from the same prompt and seed give different frames."""
    from worldmodel.model import resolve_world_model, shipped_world_model

    wm = resolve_world_model(None)
    assert next(wm.dynamics.parameters()).dtype == torch.float32 and wm.num_actions == 9
    prompt = load_prompt(shipped_world_model() / "prompt.png")
    a = np.stack([wm.dream(prompt, steps=2, seed=0).step(0) for _ in range(1)])
    b = np.stack([wm.dream(prompt, steps=2, seed=0).step(6) for _ in range(1)])
    assert a.shape == (1, 64, 64, 3) and a.dtype == np.uint8 and not np.array_equal(a, b)


def test_tokenizer_sweep_records_a_curve_and_reports_it(square_dataset, tmp_path):
    from scripts.tokenizer_sweep import Args, configs, main

    main(Args(dataset=square_dataset, out=tmp_path, variants=("base",), steps=4, eval_every=2, threads=1))
    run = json.loads((tmp_path / "base.json").read_text())
    assert [r["step"] for r in run["curve"]] == [2, 4]
    assert run["final"]["psnr"] == pytest.approx(run["curve"][-1]["psnr"])
    times = tmp_path / "time_1threads.json"
    times.write_text(json.dumps({"seconds_per_step": {"base": 0.5}}))
    main(Args(dataset=square_dataset, out=tmp_path / "r", report=tmp_path, cpu_times=times))
    (row,) = json.loads((tmp_path / "r" / "report.json").read_text())["runs"]
    assert row["variant"] == "base" and row["steps"] == 4
    assert row["cpu_minutes_for_steps"] == pytest.approx(4 * 0.5 / 60)
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        configs("nope", 4, 2, "cpu", 1)
    m, _ = configs("st-vivit", 4, 2, "cpu", 1)  # Genie's tokenizer: the conv preset's grid and codes
    assert isinstance(m, STViViTConfig) and (m.grid, m.num_codes) == (8, 625)
    from envs.dataset import EpisodeDataset
    from scripts.tokenizer_sweep import inference_fps, seconds_per_step

    tiny, frames = STViViTConfig(dim=32, depth=1, heads=2, clip_frames=3, code_dims=2), EpisodeDataset(square_dataset).frames
    assert seconds_per_step(tiny, TokenizerTrainConfig(batch_size=6), frames, 1) > 0  # timed on clips of 3 frames
    for cfg in (tiny, TINY_TOK):
        fps = inference_fps(cfg, frames, n=1)
        assert set(fps) == {"encode_fps", "decode_fps_batch1"} and min(fps.values()) > 0


def test_st_transformer_lam_trains_with_the_shared_trainer_and_round_trips(square_dataset, tmp_path):
    """Genie's pixel ST-transformer LAM goes through the shared ``train_lam`` (a few steps; whether it
    learns is measured on CoinRun by ``scripts/compare_wm_lams.py``: the table in
    ``docs/worldmodel_history.md``; on the moving square, 250 steps gave FDM loss 0.52 × copy-last and
    probe 1.00, too slow for this suite), saves and loads exactly, and refuses a joint action decoder."""
    from lapo.lam import LAMTrainConfig, build_lam, train_lam
    from scripts.compare_wm_lams import mutual_information_bits
    from worldmodel.lam import STLAMConfig, STLatentActionModel

    cfg = STLAMConfig(dim=32, depth=2, heads=2)
    train_cfg = LAMTrainConfig(steps=3, batch_size=8, eval_every=3, probe_k=16, threads=1)
    lam, metrics = train_lam(square_dataset, tmp_path / "lam", cfg, train_cfg)
    assert {"fdm_loss", "copy_last_loss", "perplexity", "probe_accuracy"} <= set(metrics)
    assert json.loads((tmp_path / "lam" / "config.json").read_text())["kind"] == "wm_st_lam"
    loaded = STLatentActionModel.from_pretrained(tmp_path / "lam")
    window = torch.randint(0, 256, (3, 3, 64, 64, 3), dtype=torch.uint8)
    a, b = lam.eval()(window)[0], loaded.eval()(window)[0]
    torch.testing.assert_close(a.z, b.z, rtol=0, atol=0)
    torch.testing.assert_close(a.pred, b.pred, rtol=0, atol=0)
    with pytest.raises(ValueError, match="frames only"):
        build_lam(cfg, action_decoder=torch.nn.Linear(2, 4))
    with pytest.raises(TypeError, match="build"):
        build_lam({"latent_dim": 2})
    with pytest.raises(ValueError, match="patch 6"):
        STLAMConfig(patch=6)
    # I(code; action): a code that is the action carries all of H(action); an independent one none
    actions = np.repeat(np.arange(4), 8)
    assert mutual_information_bits(actions, actions) == pytest.approx((2.0, 2.0))
    assert mutual_information_bits(np.tile(np.arange(2), 16), actions) == pytest.approx((0.0, 2.0), abs=1e-12)


def test_cotrained_lam_learns_from_the_dynamics_loss_and_the_pipeline_saves_both(square_dataset, tmp_path):
    """Genie's co-training: FSQ's straight-through one-hots are one-hot forward with the gradient of
    the code grid's interpolation; the dynamics loss reaches the IDM; `lapo wm train --cotrain-lam`
    writes the co-trained LAM, its labels and the dynamics, and a rerun reuses them."""
    from lapo.lam import LatentActionModel
    from lapo.vq import FSQ
    from worldmodel.dynamics import CoTrained

    fsq = FSQ(2, levels=3, groups=1)
    z = torch.tensor([[0.2, -0.7], [0.9, 0.4]], requires_grad=True)
    w = fsq.code_weights(z)
    torch.testing.assert_close(w, torch.nn.functional.one_hot(fsq(z)[1], 9).float())
    table = torch.randn(9, 4)
    (w[:, 0] @ table).sum().backward()

    def interpolated(z_BL):  # bilinear interpolation of the table over the 3 × 3 code grid
        u = z_BL + 1  # level coordinates in [0, 2]
        cw = [torch.clamp(1 - (u[:, d, None] - torch.arange(3.0)).abs(), min=0) for d in range(2)]  # (B, 3) each
        return torch.einsum("bi,bj,jid->bd", cw[0], cw[1], table.view(3, 3, 4))

    fd = torch.zeros_like(z)
    for i in range(2):
        for j in range(2):
            e = torch.zeros_like(z)
            e[i, j] = 1e-3
            fd[i, j] = ((interpolated(z.detach() + e) - interpolated(z.detach() - e))[i].sum()) / 2e-3
    torch.testing.assert_close(z.grad, fd, rtol=1e-3, atol=1e-3)
    # one-hot weights give the same loss as ids
    dyn = Dynamics(DynamicsConfig(num_codes=25, tokens=64, num_actions=9, context=2, dim=16, depth=1, heads=2))
    tokens, ids = torch.randint(0, 25, (3, 3, 64)), torch.randint(0, 10, (3, 3))
    torch.manual_seed(1)
    by_id = dyn(tokens, ids)[0]
    torch.manual_seed(1)
    torch.testing.assert_close(dyn(tokens, torch.nn.functional.one_hot(ids, 10).float())[0], by_id)
    # the dynamics loss trains the IDM: its gradient differs from the LAM loss's alone
    lam_cfg = LAMConfig(idm_channels=(8, 16, 16), idm_hidden=32, widths=(8, 16, 16), latent_dim=2, fsq_levels=3, groups=1)
    lam = LatentActionModel(lam_cfg)
    windows = torch.randint(0, 255, (3, 3, 3, 64, 64, 3), dtype=torch.uint8)
    null = torch.tensor([[True, False, False]] * 3)
    torch.manual_seed(2)
    CoTrained(lam, dyn)(tokens, windows, null)[0].backward()
    both = lam.idm.parameters().__next__().grad.clone()
    lam.zero_grad()
    torch.manual_seed(2)
    lam(windows.flatten(0, 1))[1].backward()
    assert (both - next(lam.idm.parameters()).grad).abs().max() > 1e-6
    with pytest.raises(ValueError, match="groups=1"):
        CoTrained(LatentActionModel(dataclasses.replace(lam_cfg, latent_dim=4, groups=2)), dyn)
    # the stage graph: no lam stage, the dynamics stage writes lam/ and labels/ come from it
    cfg = WorldModelConfig(
        run_dir=tmp_path / "wm", dataset=square_dataset, tokenizer=dataclasses.replace(TINY_TOK, res_blocks=0),
        tokenizer_train=TokenizerTrainConfig(steps=3, batch_size=8, eval_every=3, val_frames=16), lam=lam_cfg,
        dynamics=DynamicsConfig(context=1, dim=16, depth=1, heads=2),
        dynamics_train=DynamicsTrainConfig(steps=3, batch_size=4, eval_every=3), cotrain_lam=True, threads=1)
    out = train_world_model(cfg)
    assert not (cfg.run_dir / "tb" / "lam").exists()
    assert {"perplexity", "fdm_loss", "probe_accuracy"} <= set(out["lam_val"])
    assert json.loads((cfg.run_dir / "labels" / "meta.json").read_text())["record"]["lam"]
    wm = WorldModel.load(cfg.run_dir)
    assert wm.num_actions == 9
    stamp = (cfg.run_dir / "lam" / "model.safetensors").stat().st_mtime_ns
    train_world_model(cfg)
    assert (cfg.run_dir / "lam" / "model.safetensors").stat().st_mtime_ns == stamp
    # the benchmark scores another run (its LAM trained before the dynamics) on the same held-out clips
    from scripts import benchmark_worldmodel as bench

    seq = dataclasses.replace(cfg, run_dir=tmp_path / "seq", cotrain_lam=False,
                              lam_train=LAMTrainConfig(steps=3, batch_size=8, eval_every=3, probe_k=16))
    train_world_model(seq)
    result = bench.main(bench.Args(world_model=cfg.run_dir, out=tmp_path / "bench.json", clips=3, horizon=2,
                                   random_draws=1, steps=1, speed_frames=2, recovery_episodes=1, recovery_length=2,
                                   compare_runs=(seq.run_dir,)))
    assert [m["cotrained_lam"] for m in result["runs"].values()] == [True, False]
    assert result["runs"][str(cfg.run_dir)]["dynamics"] == result["dynamics"]
    table = (tmp_path / "bench.md").read_text()
    assert "| co-trained |" in table and "| before dynamics |" in table
