"""Where frames come from: Procgen adapter, demonstrators, the episode dataset format."""

import contextlib
import io

with contextlib.redirect_stderr(io.StringIO()):  # gym 0.26 (a procgen dependency) prints a banner
    try:
        import gym  # noqa: F401
    except ImportError:
        pass
