import json
import os
import subprocess
import sys

import pytest

from launch.data import sources
from launch.data.sources import Source
from launch.errors import UserError
from tests.faults import (
    one_error_line,
    train,
    train_args,
)
from tests.helpers import (
    REPO,
    invoke,
    run_cli,
    write_jsonl,
)

from .common import STORIES, all_text, prepared, write_format


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("fmt", ["jsonl", "json", "txt", "parquet"])
def test_every_source_format_reads_the_same_stories(tmp_path, cache_dir, fmt, gz):
    path = write_format(tmp_path, fmt, gz)
    texts = all_text(prepared(path, cache_dir))
    assert texts["train"] + texts["validation"] + texts["test"] == STORIES


def raw_records(chunk):
    if chunk.lines is not None:
        return [json.loads(line)[chunk.field] for line in chunk.lines]
    return chunk.texts


@pytest.mark.parametrize("fmt", ["jsonl", "txt", "parquet"])
def test_big_formats_stream_in_bounded_chunks(tmp_path, monkeypatch, fmt):
    """Chunks of at most CHUNK_STORIES records; a .txt is read TEXT_BLOCK characters at a time, so
    separators fall across block boundaries, and a Windows line end reads as a plain one."""
    monkeypatch.setattr(sources, "CHUNK_STORIES", 7)
    monkeypatch.setattr(sources, "TEXT_BLOCK", 50)
    stories = [*STORIES[:30], "A story written\r\non Windows, with CRLF line ends.", *STORIES[30:]]
    path = write_format(tmp_path, fmt, gz=fmt == "txt", stories=stories)
    chunks = list(Source.of(str(path), "text", "train", None).chunks(tmp_path))
    assert len(chunks) >= 61 // 7 and all(len(raw_records(c)) <= 7 for c in chunks)
    records = [r.strip() for c in chunks for r in raw_records(c)]
    if fmt == "txt":
        assert records[-1] == ""  # what follows the last separator
        records = records[:-1]
    expected = [s.replace("\r\n", "\n") for s in stories] if fmt == "txt" else stories
    assert records == expected


def test_max_samples_stops_reading_across_files(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_STORIES", 4)
    (tmp_path / "d").mkdir()
    write_jsonl(tmp_path / "d" / "a.jsonl", STORIES[:10])
    write_jsonl(tmp_path / "d" / "b.jsonl", STORIES[10:])
    chunks = list(Source.of(str(tmp_path / "d"), "text", "train", 13).chunks(tmp_path))
    assert [r for c in chunks for r in raw_records(c)] == STORIES[:13]


def test_folder_and_glob_sources(tmp_path, cache_dir):
    (tmp_path / "d").mkdir()
    write_jsonl(tmp_path / "d" / "a.jsonl", STORIES[:30])
    write_jsonl(tmp_path / "d" / "b.jsonl.gz", STORIES[30:], gz=True)
    by_folder = all_text(prepared(tmp_path / "d", cache_dir))
    by_glob = all_text(prepared(tmp_path / "d" / "*.json*", cache_dir))
    assert by_folder == by_glob and sum(map(len, by_folder.values())) == 60


def test_custom_text_field(tmp_path, cache_dir):
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps({"story": s}) + "\n" for s in STORIES))
    assert prepared(path, cache_dir, text_field="story").splits["train"].num_stories == 42


def test_stories_that_are_not_text_are_dropped_with_the_reason(tmp_path, cache_dir):
    source = tmp_path / "mixed.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in [*STORIES[:30], None, 42, *STORIES[30:40]]))
    data = prepared(source, cache_dir)
    assert data.meta["dropped"] == {"not a string (e.g. null or a number)": 2}
    assert sum(len(v) for v in all_text(data).values()) == 40


def test_a_byte_order_mark_is_not_part_of_the_first_story(tmp_path, cache_dir):
    (tmp_path / "bom.txt").write_bytes("\ufeff".encode() + "".join(f"{s}\n<|endoftext|>\n" for s in STORIES).encode())
    texts = all_text(prepared(tmp_path / "bom.txt", cache_dir))
    assert texts["train"][0] == STORIES[0] and sum(len(v) for v in texts.values()) == len(STORIES)


def test_a_file_that_keeps_no_story_beside_a_good_one(tmp_path, cache_dir):
    (tmp_path / "stories").mkdir()
    (tmp_path / "stories" / "a.jsonl").write_text('{"text": null}\n' * 5)  # read first: nothing kept from it
    write_jsonl(tmp_path / "stories" / "b.jsonl", STORIES)
    data = prepared(tmp_path / "stories", cache_dir)
    assert sum(len(v) for v in all_text(data).values()) == len(STORIES)
    assert data.meta["dropped"] == {"not a string (e.g. null or a number)": 5}


# ---- the hub, from datasets' own offline cache --------------------------------------------------
HUB_CODE = """
import json, sys, time
from launch.settings.config import DataConfig
from launch.data.prepare import prepare_data
cfg = DataConfig(source="tests/tiny-stories", cache_dir=sys.argv[1], max_samples=None)
start = time.perf_counter()
p = prepare_data(cfg, log=lambda m: print(m, file=sys.stderr))
print(json.dumps({"from_cache": p.from_cache, "seconds": time.perf_counter() - start,
                  "stories": {k: s.num_stories for k, s in p.splits.items()}, "meta": p.meta}))
"""


def make_hub_cache(root, stories):
    """A hub dataset "tests/tiny-stories" as `datasets` files it after a download: its own builder
    writes the Arrow files under <cache>/tests___tiny-stories/default/0.0.0/<revision hash>/."""
    from datasets.packaged_modules.json.json import Json

    data = write_jsonl(root / "tiny.jsonl", stories)
    builder = Json(
        cache_dir=str(root / "hf"),
        data_files={"train": str(data), "validation": str(data)},
        dataset_name="tiny-stories",
        config_id="default",
        hash="0123456789abcdef",
    )
    builder.repo_id = "tests/tiny-stories"  # as a hub download sets it: the folder is named after the repo
    builder._cache_dir = builder._build_cache_dir()
    builder.download_and_prepare()
    return root / "hf"


@pytest.mark.slow
def test_hub_source_offline_from_the_datasets_cache_and_cheap_cache_key(tmp_path):
    hf_cache = make_hub_cache(tmp_path, STORIES)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(hf_cache), "HF_HOME": str(tmp_path / "home")}

    def run():
        proc = subprocess.run(
            [sys.executable, "-c", HUB_CODE, str(tmp_path / "cache")],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.splitlines()[-1]), proc.stderr

    first, said = run()
    assert not first["from_cache"] and first["stories"] == {"train": 42, "validation": 12, "test": 6}
    assert "hub dataset from the local datasets cache (offline)" in said
    # The key comes from the builder's revision hash, not the rows: with the Arrow files gone, a
    # cached launch still finds its tokens without reading any text.
    for arrow in hf_cache.rglob("*.arrow"):
        arrow.unlink()
    second, _ = run()
    assert second["from_cache"] and second["stories"] == first["stories"]


@pytest.mark.slow
def test_unreachable_hub_fails_at_once_with_the_fix(tmp_path):
    code = (
        "from launch.settings.config import DataConfig\n"
        "from launch.data.prepare import prepare_data\n"
        f"prepare_data(DataConfig(source='roneneldan/TinyStories', cache_dir={str(tmp_path)!r}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_DATASETS_CACHE", None)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "cannot reach the Hugging Face hub" in proc.stderr and "--data" in proc.stderr


# ---- bad input -------------------------------------------------------------------------------
def test_missing_path(cache_dir):
    with pytest.raises(UserError, match=r"data path \./nope/stories\.jsonl does not exist"):
        prepared("./nope/stories.jsonl", cache_dir)


def test_empty_file(tmp_path, cache_dir):
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(UserError, match=r"e.jsonl is empty"):
        prepared(tmp_path / "e.jsonl", cache_dir)


def test_bad_json_line_names_file_and_line(tmp_path, cache_dir):
    path = write_jsonl(tmp_path / "s.jsonl", STORIES[:5])
    path.write_text(path.read_text() + '\n{"text": "broken\n')
    with pytest.raises(UserError, match=r"s.jsonl:7: not valid JSON"):
        prepared(path, cache_dir)


def test_missing_text_field(tmp_path, cache_dir):
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps({"body": s}) + "\n" for s in STORIES))
    with pytest.raises(UserError, match=r"has no field 'text' \(fields: \['body'\]\); pass --text-field"):
        prepared(path, cache_dir)


@pytest.mark.parametrize("name", ["s.txt", "s.jsonl"])
def test_undecodable_bytes(tmp_path, cache_dir, name):
    path = tmp_path / name
    story = b"Bad \xff\xfe bytes in this story here."
    path.write_bytes(
        b'{"text": "' + story + b'"}\n' if name.endswith("jsonl") else b"A fine story.\n<|endoftext|>\n" + story
    )
    with pytest.raises(UserError, match="not UTF-8"):
        prepared(path, cache_dir)


def test_empty_and_unparseable_data(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    one_error_line(train(tmp_path / "r1", "--data", str(tmp_path / "empty.jsonl"), check=False), "is empty")
    (tmp_path / "bad.jsonl").write_text('{"text": "A good story about a dog."}\n{"text": oops}\n')
    one_error_line(
        train(tmp_path / "r2", "--data", str(tmp_path / "bad.jsonl"), check=False), "bad.jsonl:2: not valid JSON"
    )


@pytest.mark.slow
def test_unreachable_hub_with_no_local_data(tmp_path):
    # a process of its own: huggingface_hub reads HF_HUB_OFFLINE when it is first imported
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = run_cli(train_args(tmp_path / "run", "--data", "roneneldan/TinyStories"), env=env, check=False)
    one_error_line(proc, "cannot reach the Hugging Face hub")


@pytest.mark.parametrize("command", ["train", "prepare", "evaluate"])
def test_a_cut_or_fake_gzip_file_is_one_line(tmp_path, command, finished_run):
    from tests.helpers import make_stories, write_jsonl

    whole = write_jsonl(tmp_path / "whole.jsonl.gz", make_stories(3000), gz=True).read_bytes()
    (tmp_path / "half.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "plain.jsonl.gz").write_text('{"text": "A story that was never compressed."}\n')
    before = {
        "train": ["train", *train_args(tmp_path / "run")[4:]],
        "prepare": ["prepare"],
        "evaluate": ["evaluate", finished_run],
    }[command]
    for name in ("half.jsonl.gz", "plain.jsonl.gz"):
        result = invoke(*before, "--data", tmp_path / name, "--data-cache", tmp_path / "cache")
        one_error_line(result, f"{tmp_path / name} is not a complete gzip file")
    assert not (tmp_path / "run").exists()


def test_stories_that_are_not_text_name_the_reason_they_were_dropped(tmp_path):
    values = [None, 7, ["a", "list"], {"a": "dict"}] * 100
    (tmp_path / "odd.jsonl").write_text("".join(json.dumps({"text": v}) + "\n" for v in values))
    result = train(tmp_path / "run", "--data", tmp_path / "odd.jsonl", check=False)
    one_error_line(result, "400 stories read, 400 dropped: 400 not a string (e.g. null or a number)")
    assert "--text-field" in result.stderr
