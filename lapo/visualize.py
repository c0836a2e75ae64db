"""Look at latent actions: frames with their codes, a 2-D embedding of latents, code-vs-action counts.

- ``codes_gif``: each frame o_t upscaled with its transition's code ``(g0, g1, ...)`` drawn on it.
- ``embedding_plot``: the continuous latents projected on their first two principal components
  (PCA by SVD), coloured by true action where the data has actions, else by time.
- ``confusion_plot``: for the most frequent codes (rows), the distribution of true actions
  (columns), each row normalized; a code that means one action is a row with one dark cell.

True actions are read here for inspection only (``EpisodeDataset.oracle_actions``).

Dimension keys: M transitions, L latent dim, G groups, A actions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def codes_gif(frames_MHWC: np.ndarray, codes_MG: np.ndarray, path: str | os.PathLike, fps: int = 15,
              scale: int = 4) -> Path:
    """GIF of frames ``(M, H, W, 3)`` uint8 with each row of ``codes_MG`` drawn in the corner."""
    from lapo.evaluate import save_gif

    captions = ["code " + "/".join(str(int(c)) for c in code) for code in codes_MG]
    return save_gif(list(frames_MHWC), path, fps, scale, captions)


def pca_2d(latents_ML: np.ndarray) -> np.ndarray:
    """First two principal components ``(M, 2)`` of ``(M, L)`` latents."""
    x = latents_ML - latents_ML.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


def embedding_plot(latents_ML: np.ndarray, path: str | os.PathLike, actions_M: np.ndarray | None = None,
                   action_names: list[str] | None = None) -> Path:
    """Scatter of the latents' first two principal components, coloured by action (or by time)."""
    plt = _matplotlib()
    xy = pca_2d(latents_ML)
    fig, ax = plt.subplots(figsize=(6, 5))
    rng = np.random.default_rng(0)
    jitter = 0.01 * rng.standard_normal(xy.shape) * (xy.std(0) + 1e-8)  # FSQ latents sit on a grid
    if actions_M is None:
        sc = ax.scatter(*(xy + jitter).T, c=np.arange(len(xy)), s=4, cmap="viridis")
        fig.colorbar(sc, label="transition index")
    else:
        for a in np.unique(actions_M):
            m = actions_M == a
            label = action_names[a] if action_names else str(a)
            ax.scatter(*(xy[m] + jitter[m]).T, s=4, label=f"{label} ({m.sum()})", alpha=0.6)
        ax.legend(markerscale=3, fontsize=7, title="true action", loc="best")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("latent actions (IDM), first two principal components")
    return _save(fig, path)


def confusion_plot(codes_MG: np.ndarray, actions_M: np.ndarray, path: str | os.PathLike, n_actions: int,
                   top: int = 20, action_names: list[str] | None = None) -> Path:
    """Row-normalized counts of true action per code for the ``top`` most frequent codes."""
    plt = _matplotlib()
    keys, inverse, counts = np.unique(codes_MG, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(-counts)[:top]
    matrix = np.zeros((len(order), n_actions))
    for row, k in enumerate(order):
        matrix[row] = np.bincount(actions_M[inverse == k], minlength=n_actions)
    matrix /= matrix.sum(1, keepdims=True)
    fig, ax = plt.subplots(figsize=(0.45 * n_actions + 2.5, 0.3 * len(order) + 1.8))
    im = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_yticks(range(len(order)), ["/".join(map(str, keys[k])) + f" ({counts[k]})" for k in order], fontsize=7)
    ax.set_xticks(range(n_actions), action_names or [str(a) for a in range(n_actions)], rotation=90, fontsize=7)
    ax.set_xlabel("true action")
    ax.set_ylabel("latent code (count)")
    fig.colorbar(im, label="fraction of the code's transitions")
    return _save(fig, path)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    _matplotlib().close(fig)
    tmp.replace(path)
    return path


@dataclass
class VisualizeConfig:
    """``lapo visualize``: pictures of the latent actions of a labeled dataset."""

    dataset: Path
    """Dataset directory."""
    labels: Path | None = None
    """Its labels directory (default: DATASET/labels)."""
    out: Path = Path("runs/visualize")
    """Where codes.gif, embedding.png and confusion.png go."""
    gif_frames: int = 150
    """Frames in the GIF (from the first episode onwards)."""
    gif_scale: int = 4
    """Nearest-neighbour upscaling of the GIF's frames."""
    points: int = 5000
    """Transitions in the plots (evenly spaced over the dataset)."""


def visualize(cfg: VisualizeConfig) -> list[Path]:
    """Write the GIF and, where the dataset has discrete actions, the embedding and confusion plots
    (else an embedding coloured by time). Returns the written paths.

    Raises:
        FileNotFoundError: missing dataset or labels; ValueError: labels of another dataset.
    """
    from envs.dataset import EpisodeDataset
    from lapo.label import Labels

    ds = EpisodeDataset(cfg.dataset)
    labels = Labels(cfg.labels or Path(cfg.dataset) / "labels")
    if len(labels.valid) != len(ds):
        raise ValueError(f"labels at {labels.path} cover {len(labels.valid)} frames but {cfg.dataset} has "
                         f"{len(ds)}; label this dataset with `lapo label`")
    t_all = ds.transition_indices
    t_gif = t_all[:cfg.gif_frames]
    t_plot = t_all[np.linspace(0, len(t_all) - 1, min(cfg.points, len(t_all))).astype(int)]
    written = [codes_gif(np.asarray(ds.frames[t_gif]), np.asarray(labels.codes[t_gif]), Path(cfg.out) / "codes.gif",
                         scale=cfg.gif_scale)]
    latents = np.asarray(labels.latents[t_plot])
    space = ds.action_space if ds.has_actions else None
    if space is not None and hasattr(space, "n"):  # discrete actions: colour by action, code-vs-action matrix
        actions = np.asarray(ds.oracle_actions()[t_plot])  # inspection only
        n_actions = int(space.n)
        names = None
        if ds.meta.get("source", {}).get("kind") == "procgen":
            from envs.procgen import ACTION_NAMES as names
        written.append(embedding_plot(latents, Path(cfg.out) / "embedding.png", actions, names))
        written.append(confusion_plot(np.asarray(labels.codes[t_plot]), actions, Path(cfg.out) / "confusion.png",
                                      n_actions, action_names=names))
    else:
        written.append(embedding_plot(latents, Path(cfg.out) / "embedding.png"))
    return written
