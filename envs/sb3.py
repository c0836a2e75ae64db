"""stable-baselines3's vectorized-env classes, imported without the banner of gym 0.26 (which
procgen-mirror installs and SB3 imports when present). Also the preload module of the forkserver
that starts Meta-World workers (:func:`envs.metaworld.make_vec_env`), so workers print nothing."""

import contextlib
import io

with contextlib.redirect_stderr(io.StringIO()):
    from stable_baselines3.common.vec_env import SubprocVecEnv, VecEnv  # noqa: F401
