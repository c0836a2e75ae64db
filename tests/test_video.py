"""Video import and labeling: containers, pixel formats, odd sizes, frame-rate rule, broken and damaged files,
output names, CLI exit status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from envs.dataset import EpisodeDataset
from envs.video import (MODES, ImportVideoConfig, VideoConfig, VideoDecodeReport, VideoError, convert_frame, find_videos,
                        import_videos, iter_video)


def write_video(path, n=10, w=48, h=36, codec="mpeg4", pix_fmt="yuv420p", rate=15, pts=None):
    """Frame i is uniformly grey level 20*i mod 256 (alpha opaque). ``pts``: custom timestamps (1/1000 s)."""
    from fractions import Fraction

    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        if pts is not None:
            s.time_base = Fraction(1, 1000)
        for i in range(n):
            img = np.full((h, w, 4), 20 * i % 256, np.uint8)
            img[..., 3] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgba").reformat(format=pix_fmt)
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, 1000)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.mark.parametrize("name, codec, pix_fmt, w, h", [
    ("a.mp4", "mpeg4", "yuv420p", 48, 36), ("a.webm", "libvpx", "yuv420p", 48, 36),
    ("a.mkv", "mpeg4", "yuv420p", 48, 36), ("a.avi", "mpeg4", "yuv420p", 48, 36),
    ("a.gif", "gif", "rgb8", 49, 37), ("gray.mkv", "ffv1", "gray", 49, 37), ("alpha.mov", "qtrle", "argb", 40, 30),
])
def test_containers_and_pixel_formats_decode_to_rgb_frames(tmp_path, name, codec, pix_fmt, w, h):
    path = write_video(tmp_path / name, codec=codec, pix_fmt=pix_fmt, w=w, h=h)
    frames = list(iter_video(path, VideoConfig(size=16)))
    assert len(frames) == 10
    img, index, t = frames[3]
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8 and index == 3
    assert t == pytest.approx(3 / 15, abs=0.011)
    assert abs(int(img.mean()) - 60) <= 12  # grey level 20*i survived the codec


def test_geometry_modes():
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, 10:30] = 200  # a centred 20x20 bright square
    crop = convert_frame(img, VideoConfig(size=10, mode="crop"))
    assert crop.shape == (10, 10, 3) and crop.min() == 200  # only the centre square remains
    box = convert_frame(img, VideoConfig(size=10, mode="letterbox"))
    assert box[0].max() == 0 and box[-1].max() == 0  # black bars top and bottom
    assert convert_frame(img, VideoConfig(size=10, mode="resize")).shape == (10, 10, 3)


@pytest.mark.parametrize("mode", MODES)
def test_swscale_geometry_matches_the_pillow_rule(tmp_path, mode):
    """Decoding with FFmpeg's one-call conversion gives the same picture as RGB + Pillow: same
    crop / bars / stretch, pixel values within a few levels (filters differ slightly; in crop mode
    swscale scales before cutting, so the outermost columns blend in what lies beyond the cut, and
    Pillow blurs a letterboxed picture into its bars)."""
    from envs.video import write_video as encode

    img = np.full((40, 80, 3), 30, np.uint8)
    img[:, 20:60] = 220  # a centred 40x40 bright square on a dark frame
    img[8:12, 30:50] = (200, 40, 40)  # a red bar inside it
    path = encode([img] * 3, tmp_path / "wide.mp4")
    frames = {r: [f for f, _, _ in iter_video(path, VideoConfig(size=16, mode=mode, resampler=r))]
              for r in ("swscale", "pillow")}
    a, b = frames["swscale"][1].astype(int), frames["pillow"][1].astype(int)
    assert a.shape == b.shape == (16, 16, 3) and len(frames["swscale"]) == 3
    if mode == "crop":
        assert a[6:, 1:-1].min() > 150  # only the bright square remains (below the red bar)
    if mode == "letterbox":
        assert a[:4].max() < 10 and a[12:].max() < 10 and a[8, 8].min() > 150  # black bars top and bottom
    # away from a cut (crop) or a bar's edge (letterbox: Pillow blurs the content into the bar)
    inner = {"crop": np.s_[:, 1:-1], "letterbox": np.s_[5:11], "resize": np.s_[:]}[mode]
    assert np.abs(a[inner] - b[inner]).mean() < 4, np.abs(a[inner] - b[inner]).mean()


def test_fps_rule_uses_timestamps_for_variable_frame_rate(tmp_path):
    pts = [0, 30, 60, 300, 320, 700, 1000]  # ms, irregular
    path = write_video(tmp_path / "vfr.mkv", n=7, codec="ffv1", pix_fmt="yuv420p", pts=pts)
    kept = [index for _, index, _ in iter_video(path, VideoConfig(size=8, fps=4))]  # one per 250 ms
    assert kept == [0, 3, 5, 6]
    assert [i for _, i, _ in iter_video(path, VideoConfig(size=8, stride=3))] == [0, 3, 6]


def test_broken_inputs_are_reported_by_name_and_the_rest_imported(tmp_path):
    (tmp_path / "in").mkdir()
    write_video(tmp_path / "in" / "good.mp4", n=6)
    write_video(tmp_path / "in" / "second.avi", n=4)
    (tmp_path / "in" / "notes.mp4").write_text("not a video at all")
    (tmp_path / "in" / "empty.mkv").write_bytes(b"")
    with av.open(str(tmp_path / "in" / "zero_frames.mkv"), "w") as c:  # a header, a stream, no frames
        s = c.add_stream("ffv1", rate=15)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        c.start_encoding()
    data = (tmp_path / "in" / "good.mp4").read_bytes()
    (tmp_path / "in" / "truncated.mp4").write_bytes(data[: len(data) // 3])
    path, failures = import_videos(ImportVideoConfig([tmp_path / "in"], tmp_path / "ds", VideoConfig(size=16)))
    failed = " ".join(failures)
    assert all(name in failed for name in ("notes.mp4", "empty.mkv", "truncated.mp4", "zero_frames.mkv"))
    ds = EpisodeDataset(path)
    assert ds.num_episodes == 2 and len(ds) == 10 and not ds.has_actions
    assert [s["frames"] for s in ds.meta["source"]["files"]] == [6, 4]
    with pytest.raises(FileExistsError, match="--overwrite"):
        import_videos(ImportVideoConfig([tmp_path / "in"], tmp_path / "ds"))


def test_missing_file_raises_video_error(tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        list(iter_video(tmp_path / "nope.mp4", VideoConfig()))


def test_cli_exit_status_counts_failures_and_nothing_is_written_when_all_fail(tmp_path):
    (tmp_path / "bad.mp4").write_text("nope")
    write_video(tmp_path / "ok.mp4", n=3)
    run = lambda *a: subprocess.run([sys.executable, "-m", "scripts.cli", "import-video", *map(str, a)],  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    proc = run("--inputs", tmp_path / "bad.mp4", tmp_path / "ok.mp4", "--out", tmp_path / "ds", "--video.size", "16")
    assert proc.returncode == 1 and "bad.mp4" in proc.stderr
    assert EpisodeDataset(tmp_path / "ds").num_episodes == 1
    proc = run("--inputs", tmp_path / "bad.mp4", "--out", tmp_path / "ds2")
    assert proc.returncode == 1 and not (tmp_path / "ds2").exists()


def tiny_lam(tmp_path):
    """A randomly initialized tiny LAM saved to ``tmp_path / "lam"`` and loaded back."""
    import torch

    from lapo.lam import LAMConfig, LatentActionModel

    torch.manual_seed(0)
    cfg = LAMConfig(idm_channels=(8, 8, 8), idm_hidden=16, widths=(8, 8, 8), latent_dim=4)
    LatentActionModel(cfg).save_pretrained(tmp_path / "lam")
    return LatentActionModel.from_pretrained(tmp_path / "lam")


def test_video_labels_match_labels_of_the_imported_dataset(tmp_path, monkeypatch):
    """Streaming labels of a file == labels of the same file imported as a dataset, for any batch size,
    with the IDM in worker threads or not."""
    from lapo.label import Labels, label_dataset, label_video

    lam = tiny_lam(tmp_path)  # every call in fp32: where bf16 is native, "auto" measures each call anew
    video = write_video(tmp_path / "clip.mp4", n=11)
    cfg = VideoConfig(size=64)
    small = label_video(lam, video, tmp_path / "small", cfg, batch_size=3, precision="fp32")  # 2 IDM threads, 4 batches in flight
    big = label_video(lam, video, tmp_path / "big", cfg, batch_size=512, workers=0, precision="fp32")  # one, in this thread
    ds_path, _ = import_videos(ImportVideoConfig([video], tmp_path / "ds", cfg))
    ref = Labels(label_dataset(tmp_path / "lam", ds_path, precision="fp32"))
    for out in (small, big):
        latents = np.load(out / "latents.npy")
        assert latents.shape == (10, 4) and np.load(out / "codes.npy").shape == (10, 2)
        np.testing.assert_allclose(latents, ref.latents[:10], atol=1e-5)
        np.testing.assert_array_equal(np.load(out / "frame_indices.npy"), np.arange(10))
        np.testing.assert_allclose(np.load(out / "timestamps.npy"), np.arange(10) / 15, atol=0.011)
    with pytest.raises(FileExistsError, match="--overwrite"):
        label_video(lam, video, small, cfg)
    # a large source is converted in the IDM threads instead of the decoding thread: same labels, and
    # each decoded frame converted once (two threads converting one frame shared by adjacent batches
    # crashed PyAV)
    import envs.video

    large = write_video(tmp_path / "large.mp4", n=11, w=160, h=160)
    converted, convert = [], envs.video.frame_to_rgb
    monkeypatch.setattr(envs.video, "frame_to_rgb", lambda f, c: converted.append(f.pts) or convert(f, c))
    threads = np.load(label_video(lam, large, tmp_path / "t", cfg, batch_size=4, precision="fp32") / "latents.npy")
    assert sorted(converted) == sorted(set(converted)) and len(converted) == 11
    monkeypatch.undo()
    inline = np.load(label_video(lam, large, tmp_path / "i", cfg, batch_size=4, workers=0, precision="fp32")
                     / "latents.npy")
    np.testing.assert_allclose(threads, inline, atol=1e-5)


def test_label_cli_reports_bad_files_and_labels_the_rest(tmp_path):
    tiny_lam(tmp_path)
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "ok.webm", n=5, codec="libvpx")
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"\x00" * 100)
    proc = subprocess.run([sys.executable, "-m", "scripts.cli", "label", "--checkpoint", str(tmp_path / "lam"),
                           "--input", str(tmp_path / "videos"), "--out", str(tmp_path / "labels")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "broken.mp4" in proc.stderr
    assert np.load(tmp_path / "labels" / "ok" / "latents.npy").shape == (4, 4)
    assert not (tmp_path / "labels" / "broken").exists()


def test_label_shards_inputs_across_torchrun_ranks(tmp_path):
    """Under `torchrun --nproc_per_node 2` ranks 0 and 1 label disjoint shares (2 and 1 of 3 videos)
    that together cover every video, into one output folder."""
    import os

    tiny_lam(tmp_path)
    (tmp_path / "v").mkdir()
    for i in range(3):
        write_video(tmp_path / "v" / f"clip{i}.mp4", n=3)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "scripts.cli", "label", "--checkpoint", str(tmp_path / "lam"),
                           "--input", str(tmp_path / "v"), "--out", str(tmp_path / "labels")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == ["clip0", "clip1", "clip2"]
    assert "labeled 2 of 2 inputs" in proc.stdout and "labeled 1 of 1 inputs" in proc.stdout


# --- damaged streams: decode errors and lost frames are reported, not silently dropped ---

ROOT = Path(__file__).resolve().parents[1]


def corrupt_middle(path, n_bytes=1000):
    """Overwrite ``n_bytes`` of the encoded stream with 0xff, from the first byte of the middle packet."""
    with av.open(str(path)) as c:
        packets = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    start = packets[len(packets) // 2][0]
    data = bytearray(Path(path).read_bytes())
    data[start:start + n_bytes] = b"\xff" * n_bytes
    Path(path).write_bytes(bytes(data))
    return path


def damaged_video(path):
    """A 200-frame mpeg4 mp4 (15 fps) whose packets from frame 100 on are overwritten for 1000 bytes."""
    return corrupt_middle(write_video(path, n=200, w=64, h=64))


def test_corrupt_packets_in_the_middle_are_skipped_counted_and_decoding_goes_on(tmp_path):
    report = VideoDecodeReport()
    frames = list(iter_video(damaged_video(tmp_path / "clip.mp4"), VideoConfig(size=16), report))
    assert report.declared == 200 and report.decoded == len(frames)
    assert 100 <= len(frames) < 200  # everything before the damage, and frames after it
    assert report.errors > 0 and report.damaged
    assert report.lost == 200 - len(frames) >= report.errors
    assert frames[-1][2] == pytest.approx(199 / 15, abs=0.011)  # decoding went on to the last frame
    expected = f"{tmp_path / 'clip.mp4'}: {report.errors} decode errors, {report.lost} of 200 frames lost"
    assert report.summary() == expected
    assert report.to_meta()["frames_lost"] == report.lost


@pytest.mark.parametrize("name, codec", [("intact.mp4", "mpeg4"), ("intact.mkv", "ffv1")])
def test_intact_video_reports_no_errors_and_nothing_lost(tmp_path, name, codec):
    report = VideoDecodeReport()
    n = sum(1 for _ in iter_video(write_video(tmp_path / name, n=12, codec=codec), VideoConfig(size=16), report))
    assert n == report.decoded == 12 and report.errors == 0 and report.lost == 0 and not report.damaged
    assert report.declared in (12, 0)  # mkv declares no frame count


def test_import_skips_a_damaged_file_unless_allow_partial(tmp_path):
    (tmp_path / "in").mkdir()
    damaged_video(tmp_path / "in" / "clip.mp4")
    write_video(tmp_path / "in" / "good.mp4", n=6)
    cfg = ImportVideoConfig([tmp_path / "in"], tmp_path / "strict", VideoConfig(size=16))
    path, failures = import_videos(cfg)
    assert len(failures) == 1 and "clip.mp4" in failures[0] and "of 200 frames lost" in failures[0]
    assert "--allow-partial" in failures[0]
    assert EpisodeDataset(path).num_episodes == 1
    path, failures = import_videos(ImportVideoConfig([tmp_path / "in"], tmp_path / "partial", VideoConfig(size=16),
                                                     allow_partial=True))
    ds = EpisodeDataset(path)
    assert failures == [] and ds.num_episodes == 2
    clip, good = ds.meta["source"]["files"]
    assert clip["frames_lost"] == 200 - clip["frames"] > 0 and clip["decode_errors"] > 0
    assert good["frames_lost"] == good["decode_errors"] == 0
    assert len(ds.meta["source"]["partial"]) == 1


def label_cli(*args):
    return subprocess.run([sys.executable, "-m", "scripts.cli", "label", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def test_label_cli_reports_a_damaged_video_and_counts_it_unless_allow_partial(tmp_path):
    tiny_lam(tmp_path)
    (tmp_path / "v").mkdir()
    damaged_video(tmp_path / "v" / "clip.mp4")
    write_video(tmp_path / "v" / "good.mp4", n=5)
    common = ["--checkpoint", tmp_path / "lam", "--input", tmp_path / "v", "--out", tmp_path / "labels"]
    proc = label_cli(*common)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "clip.mp4" in line]
    meta = json.loads((tmp_path / "labels" / "clip" / "meta.json").read_text())
    assert meta["decode_errors"] > 0 and meta["frames_lost"] == 200 - meta["frames_decoded"] > 0
    assert len(lines) == 1 and lines[0].startswith("failed: ")
    assert f"clip.mp4: {meta['decode_errors']} decode errors, {meta['frames_lost']} of 200 frames lost" in lines[0]
    good = json.loads((tmp_path / "labels" / "good" / "meta.json").read_text())
    assert good["decode_errors"] == good["frames_lost"] == 0 and good["frames_decoded"] == 5

    proc = label_cli(*common, "--allow-partial", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "clip.mp4" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "of 200 frames lost" in lines[0]
    latents = np.load(tmp_path / "labels" / "clip" / "latents.npy")
    assert latents.shape == (meta["frames_decoded"] - 1, 4)


# --- output names ---

def test_output_names_are_stems_then_stem_ext_then_parent_folders():
    from scripts.label import unique_names

    assert unique_names([Path("x/clip.gif"), Path("x/clip.mkv"), Path("x/other.mp4")]) == ["clip_gif", "clip_mkv",
                                                                                           "other"]
    assert unique_names([Path("a/clip.mp4"), Path("b/clip.mp4"), Path("b/clip.gif"), Path("c/solo.avi")]) == \
        ["a_clip_mp4", "b_clip_mp4", "clip_gif", "solo"]
    assert unique_names([Path("/d/a/v/clip.mp4"), Path("/d/b/v/clip.mp4")]) == ["a_v_clip_mp4", "b_v_clip_mp4"]
    names = unique_names([Path("clip.gif"), Path("clip.mkv"), Path("clip_gif.mp4")])  # a made name meets a stem
    assert len(set(names)) == 3 and names[1] == "clip_mkv"
    # dataset directories take part too: two datasets named "data" and a video data.mp4 stay apart
    assert unique_names([Path("/r/a/data"), Path("/r/b/data"), Path("/v/data.mp4")]) == ["a_data", "b_data", "data_mp4"]


def test_a_file_reached_twice_is_found_once(tmp_path):
    write_video(tmp_path / "clip.mp4", n=2)
    assert find_videos([tmp_path, tmp_path / "clip.mp4", tmp_path / "." / "clip.mp4"]) == [tmp_path / "clip.mp4"]


def test_a_container_read_error_ends_the_stream_after_flushing_and_is_counted():
    """A demuxer error cannot be resumed from: the frames the decoder holds still come out, then it stops."""
    from types import SimpleNamespace

    from envs.video import decode_frames

    def broken():
        return av.error.InvalidDataError(1094995529, "Invalid data found when processing input")

    def demux(stream):
        yield from ("ok", "bad", "ok")  # "bad" fails to decode and is skipped
        raise broken()  # the container itself breaks here

    def decode(packet):
        if packet == "bad":
            raise broken()
        return ["held"] if packet is None else ["frame"]  # decoding None flushes what the decoder holds

    report = VideoDecodeReport(declared=5)
    frames = list(decode_frames(SimpleNamespace(demux=demux), SimpleNamespace(decode=decode), report))
    assert frames == ["frame", "frame", "held"]
    assert report.decoded == 3 and report.errors == 2 and report.lost == 2
