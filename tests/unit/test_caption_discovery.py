"""Finding images on disk and planning what goes into each request."""

from pathlib import Path

import pytest

from qwenvl_serve.caption.batches import Batch, path_key, pending, plan_batches
from qwenvl_serve.caption.discovery import CaptionInputError, discover_images


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


@pytest.fixture
def tree(tmp_path):
    for name in ["b.jpg", "a.PNG", "notes.txt", ".hidden.jpg", "sub/c.webp", ".git/d.jpg"]:
        touch(tmp_path / name)
    return tmp_path


def test_a_directory_gives_its_images_in_name_order_without_hidden_files(tree):
    assert discover_images([tree], recursive=False) == [tree / "a.PNG", tree / "b.jpg"]


def test_recursive_also_walks_subdirectories_but_not_hidden_ones(tree):
    found = discover_images([tree], recursive=True)
    assert found == [tree / "a.PNG", tree / "b.jpg", tree / "sub" / "c.webp"]


def test_a_named_file_is_taken_whatever_its_suffix_and_duplicates_are_dropped(tree):
    found = discover_images([tree / "notes.txt", tree, tree / "b.jpg"], recursive=False)
    assert found == [tree / "notes.txt", tree / "a.PNG", tree / "b.jpg"]


def test_a_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(CaptionInputError, match="no such file or directory"):
        discover_images([tmp_path / "missing"], recursive=False)


def test_no_images_at_all_suggests_recursive(tmp_path):
    touch(tmp_path / "deep" / "x.jpg")
    with pytest.raises(CaptionInputError, match="--recursive"):
        discover_images([tmp_path], recursive=False)


def test_without_grouping_each_image_is_its_own_request():
    images = [Path("a/1.jpg"), Path("a/2.jpg")]
    assert plan_batches(images, None) == [Batch((images[0],)), Batch((images[1],))]


def test_grouping_keeps_directories_apart_and_splits_big_ones():
    images = [Path(f"day1/{i}.jpg") for i in range(5)] + [Path("day2/x.jpg")]
    batches = plan_batches(images, 2)
    assert [len(batch.images) for batch in batches] == [2, 2, 1, 1]
    assert batches[-1].images == (Path("day2/x.jpg"),)
    assert all(len({p.parent for p in batch.images}) == 1 for batch in batches)


def test_keys_are_normalized_paths_and_pending_skips_finished_ones():
    batches = plan_batches([Path("a/./1.jpg"), Path("a/2.jpg")], None)
    assert batches[0].key == ("a/1.jpg",)
    assert pending(batches, {(path_key("a//1.jpg"),)}) == [batches[1]]


def test_a_video_is_always_its_own_request():
    photos = [Path("d/a.jpg"), Path("d/b.jpg"), Path("d/clip.MP4"), Path("d/c.jpg")]
    assert plan_batches(photos, 4) == [
        Batch((Path("d/a.jpg"), Path("d/b.jpg"), Path("d/c.jpg"))),
        Batch((Path("d/clip.MP4"),)),
    ]


def test_videos_are_found_next_to_images(tmp_path):
    for name in ["a.jpg", "b.mov", "c.webm", "d.mkv", "e.mp4", "f.avi"]:
        touch(tmp_path / name)
    found = [path.name for path in discover_images([tmp_path], recursive=False)]
    assert found == ["a.jpg", "b.mov", "c.webm", "d.mkv", "e.mp4"]


def test_group_size_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        plan_batches([Path("a.jpg")], 0)
