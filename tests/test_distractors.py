"""Tests of the distractors package: video pools, playback, compositing, statistics.

Video-folder tests write real mp4 files with OpenCV (fourcc mp4v) and decode them again.
"""

import json
import warnings

import cv2
import numpy as np
import pytest

from distractors import (
    REAL_DRIVING_STATISTICS,
    BackgroundPlayer,
    VideoPool,
    VideoSourceError,
    VideoSourceNotFoundError,
    composite_color,
    composite_segmentation,
    load_video_dir,
    make_video_pool,
    procedural_driving_video,
    video_statistics,
)

# ---------------------------------------------------------------- helpers and fixtures

# Each test clip is a flat gray level of its own, so decoded frames reveal their source file.
CLIP_LEVELS = {"a_clip.mp4": 40, "b_clip.mp4": 100, "c_clip.mp4": 160, "d_clip.avi": 220}
CLIP_LENGTHS = {"a_clip.mp4": 12, "b_clip.mp4": 9, "c_clip.mp4": 15, "d_clip.avi": 10}


def write_video(path, frames_bgr, fps=15):
    """Write (N, H, W, 3) uint8 BGR frames to an mp4 (mp4v) or avi (MJPG) file."""
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    height, width = frames_bgr.shape[1:3]
    writer = cv2.VideoWriter(str(path), fourcc, fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {path.suffix} here"
    for frame in frames_bgr:
        writer.write(frame)
    writer.release()


def flat_clip(level, length, height=72, width=96):
    """A clip whose frames are a flat gray level with a small moving bright square."""
    frames = np.full((length, height, width, 3), level, np.uint8)
    for t in range(length):
        frames[t, 8:16, 4 * t % (width - 8):4 * t % (width - 8) + 8] = 255
    return frames


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    """A folder with four short real videos (three mp4, one avi) and a text file."""
    folder = tmp_path_factory.mktemp("driving_car")
    for name, level in CLIP_LEVELS.items():
        write_video(folder / name, flat_clip(level, CLIP_LENGTHS[name]))
    (folder / "README.txt").write_text("not a video")
    return folder


def clip_level(frames):
    """Median gray level of a set of decoded frames (the moving square is a minority)."""
    return float(np.median(frames))


def level_of(name):
    return CLIP_LEVELS[name]


@pytest.fixture(scope="module")
def default_pool():
    """The default procedural pool: 1000 grayscale 64x64 frames, seed 0."""
    return procedural_driving_video()


# ---------------------------------------------------------------- video folders

def test_video_folder_is_decoded_into_a_pool_of_whole_clips(video_folder):
    pool = load_video_dir(video_folder, num_frames=40, size=16, seed=0)
    assert pool.frames.shape == (40, 16, 16, 1) and pool.frames.dtype == np.uint8
    assert len(pool) == 40
    files = pool.description["files"]
    assert sorted(files) == sorted(CLIP_LEVELS)  # 46 frames available, all four clips needed
    lengths = [CLIP_LENGTHS[name] for name in files]
    assert pool.description["clip_frames"] == lengths[:-1] + [40 - sum(lengths[:-1])]
    # video_ids mark the clip boundaries, and each clip holds the frames of the file named for it
    for clip_id, name in enumerate(files):
        rows = np.flatnonzero(pool.video_ids == clip_id)
        assert rows.tolist() == list(range(rows[0], rows[0] + len(rows)))
        assert abs(clip_level(pool.frames[rows]) - level_of(name)) < 6
    json.dumps(pool.description)
    assert pool.description["kind"] == "video_dir" and pool.description["seed"] == 0


def test_the_last_clip_is_truncated_and_later_files_are_not_read(video_folder):
    pool = load_video_dir(video_folder, num_frames=10, size=8, seed=3)
    first = pool.description["files"][0]
    if CLIP_LENGTHS[first] >= 10:
        assert pool.description["files"] == [first] and pool.video_ids.tolist() == [0] * 10
    else:
        assert len(pool.description["files"]) == 2
        assert pool.description["clip_frames"][1] == 10 - CLIP_LENGTHS[first]


def test_file_order_is_a_seeded_shuffle(video_folder):
    orders = {seed: load_video_dir(video_folder, num_frames=46, size=8, seed=seed)
              .description["files"] for seed in range(6)}
    assert len({tuple(order) for order in orders.values()}) > 1
    again = load_video_dir(video_folder, num_frames=46, size=8, seed=2)
    assert again.description["files"] == orders[2]
    first = load_video_dir(video_folder, num_frames=46, size=8, seed=2)
    assert np.array_equal(first.frames, again.frames)


def test_a_glob_selects_files_like_the_folder_does(video_folder):
    from_glob = load_video_dir(str(video_folder / "*.mp4"), num_frames=36, size=8, seed=1)
    assert sorted(from_glob.description["files"]) == ["a_clip.mp4", "b_clip.mp4", "c_clip.mp4"]
    from_folder_glob = load_video_dir(str(video_folder / "*"), num_frames=46, size=8, seed=1)
    from_folder = load_video_dir(video_folder, num_frames=46, size=8, seed=1)
    assert from_folder_glob.description["files"] == from_folder.description["files"]
    assert np.array_equal(from_folder_glob.frames, from_folder.frames)


def test_a_glob_may_start_with_the_home_folder(video_folder, monkeypatch):
    monkeypatch.setenv("HOME", str(video_folder.parent))
    pool = load_video_dir(f"~/{video_folder.name}/*.mp4", num_frames=36, size=8, seed=1)
    assert sorted(pool.description["files"]) == ["a_clip.mp4", "b_clip.mp4", "c_clip.mp4"]


def test_rgb_pool_keeps_colors_in_rgb_order(tmp_path):
    red_bgr = np.zeros((6, 40, 40, 3), np.uint8)
    red_bgr[..., 2] = 200  # OpenCV writes BGR: channel 2 is red
    write_video(tmp_path / "red.mp4", red_bgr)
    pool = load_video_dir(tmp_path, num_frames=6, size=10, rgb=True)
    assert pool.frames.shape == (6, 10, 10, 3)
    red, green, blue = (pool.frames[..., c].mean() for c in range(3))
    assert red > 150 and green < 50 and blue < 50
    assert pool.frame_rgb(0).shape == (10, 10, 3)


def test_too_few_frames_gives_a_shorter_pool_and_a_warning(video_folder):
    with pytest.warns(UserWarning, match="only 46 frames"):
        pool = load_video_dir(video_folder, num_frames=100, size=8)
    assert len(pool) == 46 and pool.num_videos == 4


def test_a_corrupt_video_is_skipped_with_a_warning_naming_it(tmp_path):
    write_video(tmp_path / "good.mp4", flat_clip(90, 8))
    (tmp_path / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.warns(UserWarning, match="broken.mp4"):
        pool = load_video_dir(tmp_path, num_frames=8, size=8, seed=0)
    assert pool.description["files"] == ["good.mp4"]
    assert pool.description["skipped"] == ["broken.mp4"]
    assert len(pool) == 8


def test_nothing_readable_is_an_error(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x01 not a video at all" * 100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(VideoSourceError, match="could be decoded"):
            load_video_dir(tmp_path, num_frames=8)


def test_missing_path_is_an_error_that_says_what_to_pass(tmp_path):
    missing = tmp_path / "kinetics" / "driving_car"
    with pytest.raises(VideoSourceNotFoundError, match="does not exist") as caught:
        load_video_dir(missing)
    assert isinstance(caught.value, FileNotFoundError)
    assert isinstance(caught.value, VideoSourceError) and isinstance(caught.value, ValueError)
    assert str(missing) in str(caught.value) and "procedural" in str(caught.value)


def test_empty_folder_and_folder_without_videos_are_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoSourceError, match="is empty"):
        load_video_dir(empty)
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "notes.txt").write_text("hello")
    with pytest.raises(VideoSourceError, match="no video files"):
        load_video_dir(texts)
    with pytest.raises(VideoSourceError, match="matches no files"):
        load_video_dir(str(tmp_path / "nothing" / "*.mp4"))


# ---------------------------------------------------------------- make_video_pool and VideoPool

def test_make_video_pool_dispatches_on_the_source(video_folder):
    procedural = make_video_pool(None, num_frames=30, size=32, seed=4)
    assert procedural.description["kind"] == "procedural"
    assert procedural.frames.shape == (30, 32, 32, 1)
    named = make_video_pool("procedural", num_frames=30, size=32, seed=4)
    assert np.array_equal(procedural.frames, named.frames)
    real = make_video_pool(str(video_folder), num_frames=20, size=16, rgb=True)
    assert real.description["kind"] == "video_dir" and real.frames.shape == (20, 16, 16, 3)
    assert make_video_pool(real) is real


def test_video_pool_checks_its_arrays_and_broadcasts_gray_to_rgb():
    frames = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1)
    pool = VideoPool(frames, [0, 1], {"kind": "test"})
    rgb = pool.frame_rgb(1)
    assert rgb.shape == (4, 4, 3) and np.array_equal(rgb[..., 2], frames[1, ..., 0])
    rgb[:] = 0  # a copy: the pool is not changed
    assert pool.frames[1].max() == 31
    assert VideoPool(frames[..., 0], [0, 0]).frames.shape == (2, 4, 4, 1)  # (F, H, W) is gray
    with pytest.raises(ValueError, match="uint8"):
        VideoPool(frames.astype(np.float32), [0, 1])
    with pytest.raises(ValueError, match="video_ids"):
        VideoPool(frames, [0, 1, 2])


# ---------------------------------------------------------------- playback

def small_pool(length=7):
    values = (np.arange(length) % 256).astype(np.uint8)  # frame i shows the value i (mod 256)
    frames = np.repeat(values, 4).reshape(length, 2, 2, 1)
    return VideoPool(frames, np.arange(length) // 3, {"kind": "test"})


def test_player_walks_through_the_pool_one_frame_per_step_and_wraps():
    pool = small_pool()
    player = BackgroundPlayer(pool, seed=5)
    start = player.reset()
    indices = []
    for _ in range(16):
        frame, index = player.next_frame()
        assert frame.shape == (2, 2, 3) and frame[0, 0, 0] == index
        indices.append(index)
    assert indices == [(start + k) % 7 for k in range(16)]
    assert player.video_id == pool.video_ids[indices[-1]]


def test_player_starts_are_seeded():
    pool = small_pool(1000)
    first = BackgroundPlayer(pool, seed=1)
    second = BackgroundPlayer(pool, seed=1)
    starts = [first.reset() for _ in range(5)]
    assert starts == [second.reset() for _ in range(5)]
    assert len(set(starts)) > 1
    assert BackgroundPlayer(pool, seed=None).reset(seed=1) == BackgroundPlayer(pool, seed=1).reset()
    assert len({BackgroundPlayer(pool, seed=s).reset() for s in range(5)}) > 1


def test_player_needs_a_reset_before_frames():
    player = BackgroundPlayer(small_pool(), seed=0)
    assert player.video_id == -1
    with pytest.raises(RuntimeError, match="reset"):
        player.next_frame()


# ---------------------------------------------------------------- compositing

def test_segmentation_compositing_is_exact():
    rng = np.random.default_rng(0)
    render = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    background = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mask = rng.random((64, 64)) < 0.6
    render_before, background_before = render.copy(), background.copy()
    out = composite_segmentation(render, mask, background)
    assert out.dtype == np.uint8 and out.shape == (64, 64, 3)
    assert np.array_equal(out[mask], background[mask])
    assert np.array_equal(out[~mask], render[~mask])
    assert np.array_equal(render, render_before) and np.array_equal(background, background_before)


def test_segmentation_compositing_rejects_mismatched_inputs():
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="bool"):
        composite_segmentation(image, np.zeros((8, 8), np.uint8), image)
    with pytest.raises(ValueError, match="differ in size"):
        composite_segmentation(image, np.zeros((8, 8), bool), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="RGB"):
        composite_color(image[..., 0], image)


def test_color_rule_replaces_pixels_whose_blue_exceeds_green_and_red():
    render = np.array([[[10, 20, 30], [30, 20, 30], [0, 0, 0]],
                       [[0, 0, 1], [254, 254, 255], [200, 255, 254]],
                       [[255, 0, 254], [0, 255, 255], [100, 90, 101]]], np.uint8)
    replaced = np.array([[True, False, False],
                         [True, True, False],
                         [False, False, True]])
    background = np.full((3, 3, 3), 77, np.uint8)
    out = composite_color(render, background)
    assert np.array_equal(out[replaced], background[replaced])
    assert np.array_equal(out[~replaced], render[~replaced])


# ---------------------------------------------------------------- statistics

def test_statistics_of_hand_made_frames():
    still = np.full((4, 8, 8), 50, np.uint8)
    flicker = np.stack([np.zeros((8, 8), np.uint8), np.full((8, 8), 200, np.uint8)] * 2)
    stats = video_statistics(np.concatenate([still, flicker]), video_ids=[0] * 4 + [1] * 4)
    assert stats["num_clips"] == 2 and stats["num_frames"] == 8
    assert stats["mean_luminance"]["per_clip"] == [50.0, 100.0]
    assert stats["spatial_std"]["max"] == 0.0
    # no difference is taken across the cut between the clips
    assert stats["frame_difference"]["per_clip"] == [0.0, 200.0]
    json.dumps(stats)


# ---------------------------------------------------------------- procedural video

def test_procedural_video_is_deterministic_per_seed():
    first = procedural_driving_video(num_frames=120, size=32, seed=7)
    second = procedural_driving_video(num_frames=120, size=32, seed=7)
    other = procedural_driving_video(num_frames=120, size=32, seed=8)
    assert first.frames.tobytes() == second.frames.tobytes()
    assert first.description == second.description
    assert not np.array_equal(first.frames, other.frames)


def test_a_shorter_procedural_video_is_a_prefix_of_a_longer_one():
    longer = procedural_driving_video(num_frames=250, size=32, seed=2)
    for length in (20, 90):  # shorter and longer than the frames the exposure is metered on
        short = procedural_driving_video(num_frames=length, size=32, seed=2)
        assert np.array_equal(short.frames, longer.frames[:length])
        assert np.array_equal(short.video_ids, longer.video_ids[:length])


def test_procedural_video_in_rgb_and_gray():
    rgb = procedural_driving_video(num_frames=40, size=32, rgb=True, seed=1)
    gray = procedural_driving_video(num_frames=40, size=32, rgb=False, seed=1)
    assert rgb.frames.shape == (40, 32, 32, 3) and gray.frames.shape == (40, 32, 32, 1)
    assert rgb.description["rgb"] is True and gray.description["rgb"] is False
    channel_spread = np.abs(rgb.frames[..., 0].astype(int) - rgb.frames[..., 2]).mean()
    assert channel_spread > 3  # really colored, not gray copied three times
    # the same scenes: the luminance of the color frames is close to the gray frames
    rgb_luminance = video_statistics(rgb.frames)["mean_luminance"]["median"]
    assert abs(rgb_luminance - video_statistics(gray.frames)["mean_luminance"]["median"]) < 8


def test_default_pool_is_made_of_varied_clips_joined_by_cuts(default_pool):
    pool = default_pool
    assert pool.frames.shape == (1000, 64, 64, 1)
    clips = pool.description["clips"]
    assert {clip["kind"] for clip in clips} == {"dashcam", "in_car", "street"}
    assert sum(clip["frames"] for clip in clips) == 1000
    assert all(a["kind"] != b["kind"] for a, b in zip(clips, clips[1:]))
    lengths = np.bincount(pool.video_ids)
    assert lengths.tolist() == [clip["frames"] for clip in clips]
    json.dumps(pool.description)
    frames = pool.frames[..., 0].astype(np.int16)
    differences = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2))
    cut = np.diff(pool.video_ids) != 0
    assert differences[cut].min() > np.median(differences[~cut])
    assert (differences[~cut] == 0).mean() < 0.01  # the picture keeps moving


def test_default_pool_matches_real_driving_clip_statistics(default_pool):
    stats = video_statistics(default_pool.frames, default_pool.video_ids)
    clips = default_pool.description["clips"]
    complete = [i for i, clip in enumerate(clips) if clip["frames"] >= 100]
    tolerance = {"mean_luminance": 12.0, "spatial_std": 8.0, "frame_difference": 2.5}
    for name, real in REAL_DRIVING_STATISTICS.items():
        per_clip = np.array(stats[name]["per_clip"])[complete]
        assert real["min"] <= per_clip.min() and per_clip.max() <= real["max"], (name, per_clip)
        assert abs(stats[name]["median"] - real["median"]) <= tolerance[name], (name, stats[name])
