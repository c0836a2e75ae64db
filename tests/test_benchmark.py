"""The benchmark: no true action outside the k labeled transitions reaches a non-oracle method
(poisoned-actions test), cells resume, the CI and aggregation, the presets' networks."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from envs.dataset import EpisodeDataset
from envs.procgen import N_ACTIONS
from lapo.benchmark import (METHOD_NAMES, METHODS, OPTIONAL, TRAINED, BenchmarkConfig, GameRun, aggregate, cell_path, cells_of,
                            finetune_curves, format_results, paper_preset, run_benchmark, targets)
from lapo.decoder import ActionHeadConfig
from lapo.lam import LAMConfig, LAMTrainConfig, LatentActionModel
from lapo.policy import PolicyConfig, PolicyTrainConfig, random_shift


def tiny_config(run_dir, **overrides) -> BenchmarkConfig:
    tiny_train = PolicyTrainConfig(steps=8, batch_size=16, warmup=2)
    return BenchmarkConfig(
        games=("coinrun",), ks=(8,), seeds=(0,), run_dir=run_dir, num_frames=600, eval_episodes=3,
        lam=LAMConfig(idm_channels=(8, 8, 8), idm_hidden=16, widths=(8, 8, 8), latent_dim=4),
        lam_train=LAMTrainConfig(steps=4, batch_size=16, warmup=1, probe_k=0, eval_every=4),
        policy=PolicyConfig(channels=(8, 8, 8), hidden=16), policy_train=tiny_train, bc_train=tiny_train,
        idm_train=tiny_train, head=ActionHeadConfig(steps=20), threads=1, **overrides)


def read_cells(cfg):
    return {c: json.loads(cell_path(cfg.run_dir, "coinrun", *c).read_text()) for c in cells_of(cfg, "coinrun")}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    # ours_supervised: the k labels also enter LAM training; ours_relabel: they fit the head that
    # pseudo-labels the whole video; ours_relabel_tuned: they fine-tune the LAM's IDM; and still no
    # other action may
    cfg = tiny_config(tmp_path_factory.mktemp("bench") / "clean",
                      methods=TRAINED + ("ours_supervised", "ours_relabel"))
    return cfg, run_benchmark(cfg)


def test_poisoned_unlabeled_actions_change_nothing_but_the_oracle(clean_run, tmp_path):
    cfg, _ = clean_run
    poisoned = dataclasses.replace(cfg, run_dir=tmp_path / "poisoned")
    shutil.copytree(cfg.run_dir / "coinrun" / "dataset", poisoned.run_dir / "coinrun" / "dataset")
    # every action is replaced except the labeled subsets and the held-out probe transitions (read
    # only to score predictions); a method that read any other true action would change
    game = GameRun(cfg, "coinrun")
    keep = np.concatenate([game.test_t] + [game.subset(k, s).indices for k in cfg.ks for s in cfg.seeds])
    path = poisoned.run_dir / "coinrun" / "dataset" / "actions.npy"
    actions = np.load(path)
    changed = np.setdiff1d(np.arange(len(actions)), keep)
    actions[changed] = (actions[changed] + 1 + np.arange(len(changed)) % 7) % N_ACTIONS
    np.save(path, actions)
    assert len(changed) > len(keep)

    run_benchmark(poisoned)
    clean, dirty = read_cells(cfg), read_cells(poisoned)
    for (method, k, seed), cell in clean.items():
        other = dirty[(method, k, seed)]
        for key in ("returns", "level_seeds", "probe_accuracy", "action_accuracy"):
            if method != "oracle_bc":
                assert cell[key] == other[key], (method, k, key)
    # the poison does reach a method that reads every action: the oracle's outputs change
    obs = torch.from_numpy(np.asarray(game.ds.frames[game.test_t[:32]]))
    clean_oracle, _ = METHODS["oracle_bc"](game, None, 0)
    dirty_oracle, _ = METHODS["oracle_bc"](GameRun(poisoned, "coinrun"), None, 0)
    assert not torch.equal(clean_oracle.logits(obs), dirty_oracle.logits(obs))


def test_rerun_resumes_and_a_new_k_adds_only_its_cells(clean_run, tmp_path):
    cfg, results = clean_run
    stamps = {c: cell_path(cfg.run_dir, "coinrun", *c).stat().st_mtime_ns for c in cells_of(cfg, "coinrun")}
    more = dataclasses.replace(cfg, ks=(8, 16))
    again = run_benchmark(more)
    for c, stamp in stamps.items():
        assert cell_path(cfg.run_dir, "coinrun", *c).stat().st_mtime_ns == stamp, c
    new = set(cells_of(more, "coinrun")) - set(stamps)
    assert new == {(m, 16, 0) for m in ("bc", "idm", "ours", "ours_supervised", "ours_relabel", "ours_relabel_tuned")}
    row = next(r for r in again["rows"] if r["method"] == "ours" and r["k"] == 16)
    assert row["episodes"] == cfg.eval_episodes and 0 <= row["probe_accuracy"] <= 1
    assert (cfg.run_dir / "results.md").read_text().count("| latent policy + k-shot head |") == 3
    assert (cfg.run_dir / "normalized_return.png").stat().st_size > 0
    report = run_benchmark(dataclasses.replace(cfg, ks=(8, 32), report_only=True))
    assert sorted(report["missing_cells"]) == [f"cells/coinrun/{m}/k32/seed0.json"
                                                 for m in ("bc", "idm", "ours", "ours_relabel", "ours_relabel_tuned",
                                                           "ours_supervised")]
    assert not cell_path(cfg.run_dir, "coinrun", "ours", 32, 0).exists()
    # a report naming one method still holds every finished row (it replaces results.md)
    subset = run_benchmark(dataclasses.replace(more, methods=("bc",), report_only=True))
    assert {(r["method"], r["k"]) for r in subset["rows"]} == {(r["method"], r["k"]) for r in again["rows"]}
    assert subset["missing_cells"] == []
    # a report of a sweep still running: a method finished at one k and not the other prints "—"
    partial = dataclasses.replace(more, run_dir=tmp_path / "partial", report_only=True)
    shutil.copytree(cfg.run_dir, partial.run_dir)
    cell_path(partial.run_dir, "coinrun", "ours_relabel_tuned", 16, 0).unlink()
    report = run_benchmark(partial)
    assert report["missing_cells"] == ["cells/coinrun/ours_relabel_tuned/k16/seed0.json"]
    # the targets name the missing cells of the "ours" row they leave out, whichever --methods ran
    assert report["targets"]["ours_missing_cells"] == ["cells/coinrun/ours_relabel_tuned/k16/seed0.json"]
    bc_only = run_benchmark(dataclasses.replace(partial, methods=("bc",)))
    assert bc_only["missing_cells"] == [] and bc_only["targets"]["ours_missing_cells"] == report["missing_cells"]
    line = next(ln for ln in (partial.run_dir / "results.md").read_text().splitlines()
                if ln.startswith(f"| {METHOD_NAMES['ours_relabel_tuned']} |") and ln.endswith("| — |"))
    assert len(line.split("|")) == 5  # method, k=8, k=16


def test_workers_sharing_a_run_dir_compute_each_cell_and_stage_once(clean_run, tmp_path, monkeypatch):
    import threading
    import time

    import lapo.benchmark
    from envs.io import LockBusy, file_lock, wait_for_locks

    cfg, _ = clean_run
    shared = dataclasses.replace(cfg, run_dir=tmp_path / "shared")
    shutil.copytree(cfg.run_dir, shared.run_dir)
    monkeypatch.setattr(lapo.benchmark, "RETRY_SECONDS", 0.05)
    # a cell the other worker holds, a cell needing the latent policy it is training, and one that
    # needs neither (the LAM's labels only)
    busy, blocked, free = ("bc", 8, 0), ("ours", 8, 0), ("ours_relabel", 8, 0)
    paths = {c: cell_path(shared.run_dir, "coinrun", *c) for c in (busy, blocked, free)}
    for p in paths.values():
        p.unlink()
    theirs = {**json.loads(cell_path(cfg.run_dir, "coinrun", *busy).read_text()), "by": "the other worker"}
    holding, written_meanwhile = threading.Event(), []

    def other_worker():  # holds the cell and the stage until this worker has done the free cell
        with file_lock(paths[busy]), file_lock(shared.run_dir / "coinrun" / "seed0" / "latent_policy"):
            holding.set()
            deadline = time.monotonic() + 600
            while not paths[free].is_file() and time.monotonic() < deadline:
                time.sleep(0.05)
            written_meanwhile.extend([paths[busy].exists(), paths[blocked].exists()])
            paths[busy].write_text(json.dumps(theirs))

    t = threading.Thread(target=other_worker)
    t.start()
    holding.wait()
    results = run_benchmark(shared)
    t.join()
    assert written_meanwhile == [False, False]  # this worker moved on to the free cell
    assert json.loads(paths[busy].read_text()) == theirs  # and did not redo the other worker's cell
    assert paths[blocked].is_file() and paths[free].is_file() and results["missing_cells"] == []
    with file_lock(shared.run_dir / "x"), wait_for_locks(False), pytest.raises(LockBusy, match="x"):
        with file_lock(shared.run_dir / "x"):  # one holder at a time, also within a process
            pass


def test_results_hold_every_method_on_the_same_levels(clean_run):
    cfg, results = clean_run
    methods = {r["method"] for r in results["rows"]}
    assert methods == {"random", "demonstrator", "oracle_bc", "bc", "idm", "ours", "ours_supervised", "ours_relabel",
                       "ours_relabel_tuned"}
    ref = results["references"]["coinrun"]
    for r in results["rows"]:
        expected = (r["mean_return"] - ref["random"]) / (ref["demonstrator"] - ref["random"])
        assert r["normalized_return"] == pytest.approx(expected)
        assert r["ci95"][0] <= r["mean_return"] <= r["ci95"][1]
    cells = list(read_cells(cfg).values())
    cells[-1] = {**cells[-1], "level_seeds": [s + 1 for s in cells[-1]["level_seeds"]]}
    with pytest.raises(ValueError, match="other levels"):
        aggregate(cells, cfg)


def test_cells_run_per_seed_references_then_the_latent_rows_with_the_long_chain():
    cfg = BenchmarkConfig(games=("coinrun",), seeds=(0, 1), ks=(64,), methods=("bc", "idm", "ours", "ours_relabel"))
    order = list(cells_of(cfg, "coinrun"))
    assert [m for m, _, s in order if s == 0] == ["random", "demonstrator", "ours", "ours_relabel", "bc", "idm"]
    assert [s for *_, s in order] == [0] * 6 + [1] * 6


def test_a_row_on_fewer_seeds_is_normalized_by_its_own_seeds_references():
    def cell(method, k, seed, returns):
        return {"game": "coinrun", "method": method, "k": k, "seed": seed, "level_seeds": [seed] * len(returns),
                "returns": returns, "mean_return": float(np.mean(returns)), "probe_accuracy": None,
                "action_accuracy": None, "train_seconds": 0.0, "eval_seconds": 0.0}

    refs = [cell("random", None, 0, [0.0, 0.0]), cell("demonstrator", None, 0, [10.0, 10.0]),
            cell("random", None, 1, [4.0, 4.0]), cell("demonstrator", None, 1, [6.0, 6.0])]
    rows = [cell("ours", 64, 0, [8.0, 8.0]),  # seed 0 only: 0.8 of seed 0's gap
            cell("bc", 64, 0, [0.0, 0.0]), cell("bc", 64, 1, [5.0, 5.0]),
            cell("idm", 64, 2, [1.0, 1.0])]  # seed 2 has no references (yet): left out
    cfg = BenchmarkConfig(games=("coinrun",), seeds=(0, 1, 2), ks=(64,), methods=("bc", "idm", "ours"), ours="ours")
    results = aggregate(refs + rows, cfg)
    by = {r["method"]: r for r in results["rows"]}
    assert results["references"]["coinrun"] == {"random": 2.0, "demonstrator": 8.0}  # every seed's
    assert by["ours"]["normalized_return"] == pytest.approx(0.8) and by["ours"]["seeds"] == [0]  # pooled: 1.0
    assert by["ours"]["references"] == {"random": 0.0, "demonstrator": 10.0}
    assert by["bc"]["normalized_return"] == pytest.approx((2.5 - 2.0) / 6.0)
    assert "idm" not in by  # no references for seed 2
    paired = results["targets"]["paired_differences"]["k64_ours_minus_bc"]["per_game"]["coinrun"]
    assert paired["seeds"] == 1 and paired["mean"] == pytest.approx(0.8)  # seed 0's gap (10), not the pooled 6


def test_latent_policy_codes_diagnostic_reevaluates_ours_exactly_beside_the_level_classifier(clean_run):
    from scripts.latent_policy_codes import Args, main

    cfg, _ = clean_run
    out = main(Args(run_dir=cfg.run_dir, game="coinrun", ks=(8,), threads=1), cfg)
    rows = {r["agent"]: r for r in out["rows"]}
    assert len(rows) == 3 and all(len(r["returns"]) == cfg.eval_episodes for r in rows.values())
    ours = json.loads(cell_path(cfg.run_dir, "coinrun", "ours", 8, 0).read_text())
    assert rows["ours (MSE latent policy)"]["returns"] == ours["returns"]  # the benchmark's own cell
    assert 0 <= rows["level classifier, argmax levels"]["action_accuracy"] <= 1


def test_other_settings_in_the_same_run_dir_are_refused(clean_run):
    cfg, _ = clean_run
    with pytest.raises(ValueError, match="num_frames"):
        run_benchmark(dataclasses.replace(cfg, num_frames=700))


def test_every_method_of_the_sweep_is_a_registry_entry():
    assert set(TRAINED) | set(OPTIONAL) | {"random", "demonstrator"} == set(METHODS)
    assert all(callable(f) for f in METHODS.values())


def test_bad_sweeps_are_refused():
    with pytest.raises(ValueError, match="unknown methods"):
        BenchmarkConfig(methods=("ours", "dreamer"))
    with pytest.raises(ValueError, match="k must be"):
        BenchmarkConfig(ks=(0, 16))
    with pytest.raises(ValueError, match="notagame"):
        BenchmarkConfig(games=("notagame",))


def test_paper_preset_builds_lapo_sized_networks():
    from envs.demonstrator import shipped_demonstrator

    cfg = paper_preset()
    for game in cfg.games:
        assert (shipped_demonstrator(game) / "config.json").is_file()
    lam = LatentActionModel(cfg.lam).eval()
    assert lam.quantizer.num_codes == 64 and cfg.lam.groups == 2
    assert type(lam.idm).__name__ == "ImpalaCNN" and cfg.lam_train.steps == 50_000
    with torch.no_grad():
        out, _ = lam(torch.randint(0, 256, (2, 3, 64, 64, 3), dtype=torch.uint8))
    assert out.codes.shape == (2, 2) and out.z.shape == (2, 128)


def test_cpu_impala_preset_swaps_every_network_for_the_impala_cnn():
    from lapo.benchmark import cpu_impala_preset, cpu_preset

    cfg, cpu = cpu_impala_preset(), cpu_preset()
    lam = LatentActionModel(cfg.lam).eval()
    assert type(lam.idm).__name__ == "ImpalaCNN" and cfg.lam.fdm_size == 64 and cfg.clam_lam.idm_encoder == "impala"
    assert cfg.policy.encoder == "impala" and cfg.policy_train.steps == 8000
    with torch.no_grad():
        out, _ = lam(torch.randint(0, 256, (2, 3, 64, 64, 3), dtype=torch.uint8))
    assert out.pred.shape == (2, 3, 64, 64)
    # everything else is the cpu preset's: same video, LAM steps, k-label budgets
    same = ("num_frames", "ks", "seeds", "lam_train", "bc_train", "idm_train", "head", "eval_episodes")
    assert all(getattr(cfg, f) == getattr(cpu, f) for f in same) and cfg.run_dir != cpu.run_dir


def test_random_shift_moves_a_window_as_one():
    window = torch.randint(0, 256, (4, 1, 64, 64, 3), dtype=torch.uint8).expand(4, 3, 64, 64, 3).contiguous()
    out = random_shift(window, 4, np.random.default_rng(0).integers(0, 9, (4, 2)))
    assert out.shape == window.shape and not torch.equal(out, window)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])


def test_labeled_subset_draws_from_the_pool_only(encoded_dataset):
    ds = EpisodeDataset(encoded_dataset)
    pool = ds.transition_indices[ds.episode_index[ds.transition_indices] == 2]
    subset = ds.labeled_subset(3, seed=1, pool=pool)
    assert np.isin(subset.indices, pool).all() and len(subset.indices) == 3
    with pytest.raises(ValueError, match="pool"):
        ds.labeled_subset(1, pool=np.array([4]))  # the last frame of episode 0 is no transition
    with pytest.raises(ValueError, match="k=7"):
        ds.labeled_subset(7, pool=pool)


def test_targets_pair_episodes_on_the_same_levels_and_flag_a_game_worse_beyond_its_ci():
    def cell(returns):
        return [{"seed": 0, "returns": returns}]

    by_key = {("a", "ours", 64): cell([2, 2, 2, 2]), ("a", "bc", 64): cell([0, 0, 0, 0]),
              ("b", "ours", 64): cell([0, 0, 0, 0]), ("b", "bc", 64): cell([1, 1, 2, 1]),
              ("a", "ours", 16): cell([0, 0, 0, 0]), ("a", "bc", 16): cell([2, 2, 2, 2])}
    refs = {"a": {0: {"random": 0.0, "demonstrator": 2.0}}, "b": {0: {"random": 0.0, "demonstrator": 4.0}}}
    t = targets(by_key, refs, [{"method": "ours", "k": 256, "normalized_return": 0.9}])
    assert t["ours_k256_at_least_0.8"] and t["games"] == ["a", "b"]
    assert set(t["paired_differences"]) == {"k64_ours_minus_bc"}  # k < 64 and absent baselines are not targets
    d = t["paired_differences"]["k64_ours_minus_bc"]
    assert d["per_game"]["a"]["mean"] == pytest.approx(1.0) and d["per_game"]["b"]["mean"] == pytest.approx(-0.3125)
    assert d["mean"] == pytest.approx((1.0 - 0.3125) / 2) and d["above"]  # the average over games is above ...
    assert d["per_game"]["b"]["worse_beyond_ci"] and not d["per_game"]["a"]["worse_beyond_ci"]
    assert not t["ours_above_bc_and_idm_at_every_k_ge_64"]  # ... but game b is worse beyond its CI
    by_key[("b", "ours", 64)] = cell([1, 2, 2, 1])
    assert not targets(by_key, refs, [])["ours_above_bc_and_idm_at_every_k_ge_64"]  # no IDM row: not shown
    by_key.update({(g, "idm", 64): cell([0, 0, 0, 0]) for g in ("a", "b")})
    assert targets(by_key, refs, [])["ours_above_bc_and_idm_at_every_k_ge_64"]
    # the targets follow the row named ours (BenchmarkConfig.ours), here one below BC on game a
    by_key[("a", "ours_relabel", 64)] = cell([-2, -2, -1, -2])
    relabel = targets(by_key, refs, [], "ours_relabel")
    assert relabel["ours"] == "ours_relabel" and list(relabel["paired_differences"]["k64_ours_minus_bc"]["per_game"]) == ["a"]
    assert relabel["paired_differences"]["k64_ours_minus_bc"]["per_game"]["a"]["worse_beyond_ci"]
    # the report says which cells of that row the targets leave out (run_benchmark lists them)
    left_out = [f"cells/b/ours_relabel/k64/seed{s}.json" for s in range(5)]
    table = format_results({"rows": [], "average_over_games": [], "targets": {**relabel, "ours_missing_cells": left_out}})
    assert f"5 of its cells are missing and left out: {', '.join(left_out[:4])} ..." in table
    with pytest.raises(ValueError, match="ours 'bc': choose one of"):
        BenchmarkConfig(ours="bc")


def test_rl_rows_fine_tune_ours_and_train_ppo_from_scratch(tmp_path):
    from envs.demonstrator import PPOConfig

    cfg = tiny_config(tmp_path / "rl", methods=("ours_finetune", "ppo_scratch"), finetune_k=8, finetune_frames=128,
                      finetune_eval_every=64,
                      ppo=PPOConfig(num_envs=4, n_steps=16, batch_size=32, n_epochs=1, save_every=64))
    results = run_benchmark(cfg)
    rows = {r["method"]: r for r in results["rows"]}
    assert set(rows) == {"random", "demonstrator", "ours_finetune", "ppo_scratch"}
    for name in ("agent", "scratch"):  # the PPO runs, trained to the frame budget
        curve = json.loads((cfg.run_dir / "coinrun" / "seed0" / "ppo" / name / "curve.json").read_text())
        assert [p["frames"] for p in curve] == [0, 64, 128]  # frame 0, every finetune_eval_every, the end
        assert len(results["finetune_curves"]["coinrun"][name]) == 3
    assert rows["ours_finetune"]["k"] is None
    assert rows["ppo_scratch"]["normalized_procgen"] == pytest.approx((rows["ppo_scratch"]["mean_return"] - 5) / 5)
    c = results["finetune_curves"]["coinrun"]
    np.testing.assert_equal(c["agent_minus_scratch"], np.subtract(c["agent"], c["scratch"]))
    assert "R_max - R_min" in (cfg.run_dir / "results.md").read_text()
    assert "fine-tuning curves" in (cfg.run_dir / "results.md").read_text()
    # the curves are normalized by the references given (the rows'), not by lapo.finetune's own draw
    path = cfg.run_dir / "coinrun" / "seed0" / "ppo" / "agent" / "curve.json"
    curve = json.loads(path.read_text())
    for p, r in zip(curve, (3.0, 5.0, 7.0)):
        p["mean_return"], p["normalized_demonstrator"] = r, -9.0
    path.write_text(json.dumps(curve))
    c = finetune_curves(cfg, {"coinrun": {0: {"random": 3.0, "demonstrator": 7.0}}})["coinrun"]
    assert c["agent"] == pytest.approx([0.0, 0.5, 1.0])
    assert finetune_curves(cfg, {}) == {}  # no references yet: no curves


def test_a_setting_added_after_a_run_counts_as_its_default(clean_run):
    cfg, _ = clean_run
    path = cfg.run_dir / "benchmark_config.json"
    stored = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in stored.items() if k not in ("ppo", "finetune_frames")}))
    rl_cell = cell_path(cfg.run_dir, "coinrun", "ppo_scratch", None, 0)
    try:
        run_benchmark(dataclasses.replace(cfg, report_only=True))  # accepted: the defaults match
        with pytest.raises(ValueError, match=r"\(eval_episodes: 3 there, 5 now\)"):
            run_benchmark(dataclasses.replace(cfg, eval_episodes=5, report_only=True))
        # the RL rows' settings matter only once an RL cell exists: without one, new values replace
        # the stored ones (an old run directory takes RL rows made with today's PPO values) ...
        ppo = dataclasses.replace(cfg.ppo, n_steps=32)
        run_benchmark(dataclasses.replace(cfg, ppo=ppo, report_only=True))
        assert json.loads(path.read_text())["ppo"]["n_steps"] == 32 and "games" not in json.loads(path.read_text())
        # ... with one, they must match (a nested setting: the error names the entry)
        rl_cell.parent.mkdir(parents=True)
        rl_cell.write_text("{}")
        with pytest.raises(ValueError, match=r"\(ppo\.n_steps: 32 there, 64 now\)"):
            run_benchmark(dataclasses.replace(cfg, report_only=True))
        with pytest.raises(ValueError, match="finetune_frames: 1000000 there, 5 now"):
            run_benchmark(dataclasses.replace(cfg, ppo=ppo, finetune_frames=5, report_only=True))
    finally:
        path.write_text(json.dumps(stored))
        shutil.rmtree(rl_cell.parent.parent, ignore_errors=True)


def test_a_report_reads_each_game_from_another_run_dir_with_the_same_settings(clean_run, tmp_path):
    cfg, results = clean_run
    report = dataclasses.replace(cfg, run_dir=tmp_path / "report", report_only=True, report_from=(cfg.run_dir,))
    out = run_benchmark(report)
    assert out["rows"] == results["rows"] and out["missing_cells"] == []
    assert out["game_dirs"] == {"coinrun": str(cfg.run_dir)} and (tmp_path / "report" / "results.md").is_file()
    assert not (tmp_path / "report" / "cells").exists()  # nothing run or copied there
    with pytest.raises(ValueError, match="add --report-only"):
        dataclasses.replace(report, report_only=False)
    with pytest.raises(ValueError, match="not benchmark run directories"):
        dataclasses.replace(report, report_from=(tmp_path / "nowhere",))
    other = tmp_path / "other"
    shutil.copytree(cfg.run_dir, other, ignore=shutil.ignore_patterns("dataset", "seed?"))
    stored = json.loads((other / "benchmark_config.json").read_text())
    # a setting only the CLAM row reads differs: fine while the directory holds no CLAM cell (and a
    # directory read for a report is not rewritten) ...
    clam = dataclasses.replace(cfg.clam_lam, latent_dim=2 * cfg.clam_lam.latent_dim)
    run_benchmark(dataclasses.replace(report, run_dir=tmp_path / "r2", report_from=(other,), clam_lam=clam))
    assert json.loads((other / "benchmark_config.json").read_text()) == stored
    # ... any other setting is refused, naming the directory
    (other / "benchmark_config.json").write_text(json.dumps({**stored, "num_frames": 700}))
    with pytest.raises(ValueError, match=rf"{other} holds a benchmark run with other settings \(num_frames: 700 there"):
        run_benchmark(dataclasses.replace(report, run_dir=tmp_path / "r3", report_from=(other,)))


def test_quickstart_and_benchmark_share_the_frozen_k_label_budgets():
    from lapo.baselines import K_LABEL_STEPS
    from lapo.benchmark import cpu_preset
    from lapo.pipeline import QuickstartConfig

    bench, quick = cpu_preset(), QuickstartConfig()
    assert bench.bc_train.steps == quick.bc_train.steps == K_LABEL_STEPS["bc"]
    assert bench.idm_train.steps == K_LABEL_STEPS["idm"]
    assert bench.head.steps == quick.head.steps == ActionHeadConfig().steps == K_LABEL_STEPS["head"]


def test_sampled_pseudo_labels_keep_the_idms_uncertainty(encoded_dataset):
    """``argmax`` labels every transition with the IDM's most likely action; ``sample`` draws from its
    distribution (here 0.6 / 0.4 / 0), reproducibly per seed; an unknown mode is refused."""
    from lapo.baselines import pseudo_label
    from lapo.decoder import ActionCoding

    class ConstantIDM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.logits = torch.nn.Parameter(torch.tensor([np.log(0.6), np.log(0.4), -1e4]))

        def forward(self, window_B3HWC):
            return self.logits.expand(len(window_B3HWC), 3)

    ds, idm = EpisodeDataset(encoded_dataset), ConstantIDM()
    coding = ActionCoding({"type": "Discrete", "n": 3})
    t = np.repeat(np.array([0, 1, 2, 3, 5, 7, 8]), 300)  # transitions (not an episode's last frame)
    assert (pseudo_label(idm, ds, t, coding, "argmax") == 0).all()
    drawn = pseudo_label(idm, ds, t, coding, "sample", seed=1)
    assert set(np.unique(drawn)) == {0, 1} and abs((drawn == 1).mean() - 0.4) < 0.03
    assert (pseudo_label(idm, ds, t, coding, "sample", seed=1) == drawn).all()
    assert not (pseudo_label(idm, ds, t, coding, "sample", seed=2) == drawn).all()
    with pytest.raises(ValueError, match="choose 'argmax' or 'sample'"):
        pseudo_label(idm, ds, t[:4], coding, "greedy")
    # ours_relabel's labeler: a head that reads stored latents (here: action = the latent's argmax)
    latents = np.eye(3, dtype=np.float32)[np.arange(len(ds)) % 3] * 20
    head = torch.nn.Linear(3, 3, bias=False)
    torch.nn.init.eye_(head.weight)
    labels = pseudo_label(head, ds, t, coding, "sample", seed=1, read=lambda tt: latents[tt])
    assert (labels == t % 3).all()
    with pytest.raises(ValueError, match="idm_pseudo_labels"):
        BenchmarkConfig(idm_pseudo_labels="greedy")


def test_tune_policy_knob_scores_oracle_bc_against_the_demonstrators_own_nll(tmp_path):
    from scripts.tune_baselines import TuneConfig, main

    cfg = TuneConfig(run_dir=tmp_path / "run", num_frames=600, ks=(8,), knobs=("policy",),
                     policy_variants=("nature:40",), episodes=3, out=tmp_path / "tune.json")
    out = main(cfg)
    (row,) = out["rows"]
    assert row["value"] == "nature:40" and out["chosen"] == {row["knob"]: "nature:40"}
    # the shipped demonstrator is far from uniform on its own video; a 40-step BC is not below it
    floor = out["demonstrator_nll"]
    assert floor["train_nll"] < np.log(N_ACTIONS) - 0.2 and floor["heldout_nll"] < np.log(N_ACTIONS) - 0.2
    assert row["train_nll"] > floor["train_nll"] and 0 <= row["heldout_accuracy"] <= 1
    assert json.loads(cfg.out.read_text())["rows"] == out["rows"]
    with pytest.raises(ValueError, match="resnet:10"):
        main(dataclasses.replace(cfg, policy_variants=("resnet:10",)))


def test_the_benchmark_rl_rows_and_lapo_finetune_share_their_ppo_defaults():
    from envs.demonstrator import PPOConfig
    from lapo.finetune import FinetuneConfig

    finetune = FinetuneConfig()
    shared = {f.name: getattr(finetune, f.name) for f in dataclasses.fields(PPOConfig)}
    assert shared == dataclasses.asdict(BenchmarkConfig().ppo)
    assert shared != dataclasses.asdict(PPOConfig())  # LAPO's stage 3, not the demonstrators' values


def test_shuffled_oracle_labels_keep_ours_relabels_errors_per_true_action(clean_run, monkeypatch):
    from lapo.benchmark import relabel_pseudo_labels

    cfg, _ = clean_run
    run = GameRun(cfg, "coinrun")
    k, seed = cfg.ks[0], cfg.seeds[0]
    pseudo, _ = relabel_pseudo_labels(run, k, seed)
    fed = {}
    monkeypatch.setattr(run, "bc", lambda indices, actions, *a: fed.update(indices=indices, actions=actions))
    METHODS["oracle_bc_shuffled"](run, k, seed)
    true, shuffled = run.oracle_actions(), fed["actions"]
    assert np.array_equal(fed["indices"], run.train_t) and (shuffled != pseudo).any()
    for a in np.unique(true):  # the same pseudo-labels for each true action, in another order
        assert sorted(shuffled[true == a]) == sorted(pseudo[true == a])
    monkeypatch.setattr(run.coding, "space", {"type": "Box", "shape": [4]})
    with pytest.raises(ValueError, match="discrete actions"):
        METHODS["oracle_bc_shuffled"](run, k, seed)


def test_relabel_confusion_groups_ours_relabels_labels_against_the_true_actions(clean_run):
    from lapo.benchmark import relabel_pseudo_labels
    from scripts.relabel_confusion import Args, action_groups, main

    cfg, _ = clean_run
    group = action_groups()
    assert group.tolist() == [0, 0, 0, 3, 3, 3, 1, 1, 1, 2, 3, 3, 3, 3, 3]  # left-*, right-*, D, the rest
    result = main(Args(run_dir=cfg.run_dir, game="coinrun", ks=(8,), labelers=("ours_relabel", "idm")), cfg=cfg)
    out = result["labelers"]["ours_relabel"]["8"]
    run = GameRun(cfg, "coinrun")
    true, pseudo = group[run.oracle_actions()], group[relabel_pseudo_labels(run, 8, 0)[0]]
    confusion = np.asarray(out["confusion"])
    assert out["agreement"] == pytest.approx((true == pseudo).mean())
    for g in range(4):
        assert confusion[g].sum() == pytest.approx(1.0 if (true == g).any() else 0.0)
        if (true == g).any():
            assert confusion[g, g] == pytest.approx((pseudo[true == g] == g).mean())
    idm = result["labelers"]["idm"]["8"]  # the idm row's labels: agreement = the share-weighted diagonal
    assert idm["agreement"] == pytest.approx(np.dot(result["true_share"], np.diag(idm["confusion"])))
    assert 0 <= idm["held_out_action_agreement"] <= 1
    with pytest.raises(ValueError, match="labelers \\['ours'\\]: choose from"):
        main(Args(run_dir=cfg.run_dir, game="coinrun", ks=(8,), labelers=("ours",)), cfg=cfg)


def test_ours_relabel_tuned_starts_the_idm_rows_network_from_the_lams_idm(clean_run, monkeypatch):
    """The row is the ``idm`` row but for the IDM's start: every LAM IDM weight except the output
    layer is copied; the ``idm`` row starts at random; a network of other sizes is refused."""
    import lapo.policy
    from lapo.baselines import SupervisedIDM

    cfg, _ = clean_run
    run, started = GameRun(cfg, "coinrun"), {}

    def fit_network(model, *args, **kwargs):  # record the network as training starts
        started[kwargs.get("tag")] = {k: v.clone() for k, v in model.net.state_dict().items()}
        return model

    monkeypatch.setattr(lapo.policy, "fit_network", fit_network)
    monkeypatch.setattr(run, "bc", lambda *a: None)
    lam_idm = run.lam(0).idm.state_dict()
    METHODS["ours_relabel_tuned"](run, 8, 0)
    tuned = started.pop("supervised_idm")
    METHODS["idm"](run, 8, 0)
    scratch = started.pop("supervised_idm")
    assert set(tuned) == set(lam_idm)
    for name, weight in tuned.items():
        if name.startswith("head.2."):  # the output layer: true actions, not the latent
            assert weight.shape[0] == run.coding.out_dim != lam_idm[name].shape[0]
        else:
            assert torch.equal(weight, lam_idm[name]) and not torch.equal(scratch[name], lam_idm[name]), name
    other = PolicyConfig(image_size=cfg.lam.image_size, encoder=cfg.lam.idm_encoder, channels=(4, 4, 4),
                         hidden=cfg.lam.idm_hidden, out_dim=run.coding.out_dim)
    with pytest.raises(ValueError, match="not this IDM's network"):
        SupervisedIDM(other).init_from_lam(run.lam(0))


def test_paired_rows_script_pairs_any_two_rows_episode_by_episode(clean_run):
    from scripts.paired_rows import Args, main

    cfg, _ = clean_run
    cells = read_cells(cfg)
    ref = {m: cells[(m, None, 0)]["mean_return"] for m in ("random", "demonstrator")}
    d = main(Args(run_dir=cfg.run_dir, rows=("ours_relabel_tuned", "oracle_bc"), k=8))
    diff = (np.asarray(cells[("ours_relabel_tuned", 8, 0)]["returns"]) - np.asarray(cells[("oracle_bc", None, 0)]["returns"]))
    gap = ref["demonstrator"] - ref["random"]
    assert gap != 0 and d["mean"] == pytest.approx(diff.mean() / gap) and d["ci95"][0] <= d["mean"] <= d["ci95"][1]
    with pytest.raises(ValueError, match="no game"):
        main(Args(run_dir=cfg.run_dir, rows=("ours_relabel_tuned", "clam"), k=8))
