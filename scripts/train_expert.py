"""``lapo train-expert``: PPO demonstrator on a Procgen game, resumable, exported as safetensors.

    lapo train-expert --env-name coinrun --total-timesteps 3000000 --run-dir runs/expert_coinrun \
        --out envs/demonstrators/coinrun

Re-running the same command resumes from ``run_dir/ppo_checkpoint.zip``. At the end the policy is
exported to ``out`` (config.json + model.safetensors) and evaluated on unseen levels; the measured
return is written into ``out/config.json`` next to the weights. ``--max-minutes M`` stops a call
after M minutes with the checkpoint saved (nothing exported; re-run to continue), and
``--device cuda`` trains on a GPU (several games at once on a many-core GPU machine:
``envs/demonstrators/README.md``). ``--init-from DIR`` starts a new run from a saved demonstrator's
weights and step count (e.g. a committed candidate whose resume checkpoint was not kept).
"""

from __future__ import annotations

import json

import tyro

from envs.demonstrator import Demonstrator, TrainExpertConfig, train_demonstrator
from lapo.evaluate import evaluate


def main(cfg: TrainExpertConfig) -> dict:
    model = train_demonstrator(cfg)
    if model.num_timesteps < cfg.total_timesteps:
        print(f"stopped at {model.num_timesteps} of {cfg.total_timesteps} env steps (max_minutes="
              f"{cfg.max_minutes}); checkpoint in {cfg.run_dir}: re-run the same command to continue")
        return {"env_steps": int(model.num_timesteps), "stopped": "max_minutes"}
    model.policy.to("cpu")
    demo = Demonstrator.from_sb3(model, cfg)
    res = evaluate(demo.act, cfg.env_name, cfg.eval_episodes, cfg.distribution_mode, seed=cfg.seed,
                   desc="eval demonstrator")
    evaluation = {**res.summary(), "levels": "unseen (evaluation range)", "policy": "sampled"}
    demo.save_pretrained(cfg.out, evaluation=evaluation,
                         command=f"lapo train-expert --env-name {cfg.env_name} "
                                 f"--total-timesteps {cfg.total_timesteps} --run-dir {cfg.run_dir}")
    print(json.dumps(evaluation, indent=2))
    return evaluation


if __name__ == "__main__":
    main(tyro.cli(TrainExpertConfig))
