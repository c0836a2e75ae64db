"""``lapo import-video``: a folder of action-free video files -> an episode dataset (one episode per file).

    lapo import-video --inputs videos/ --out data/videos --video.size 64 --video.mode crop --video.fps 15

Unreadable files are listed on stderr with the reason and skipped; the exit status is the number
of files that failed (0 = all imported).
"""

from __future__ import annotations

import sys

import tyro

from envs.video import ImportVideoConfig, import_videos


def main(cfg: ImportVideoConfig) -> int:
    path, failures = import_videos(cfg)
    for message in failures:
        print(f"failed: {message}", file=sys.stderr)
    print(f"wrote {path}" if path else f"no video could be imported; {cfg.out} was not written")
    if failures:
        raise SystemExit(min(len(failures), 255))
    return 0


if __name__ == "__main__":
    main(tyro.cli(ImportVideoConfig))
