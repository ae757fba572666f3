import pytest

from leantune.data import load_dataset, load_sequence_folder
from leantune.data.prompts import build_prompt, render
from leantune.data.stats import dataset_stats
from leantune.errors import DataError

from .conftest import write_sequence_folder


def test_samples_follow_reference_construction(tiny_rec):
    ds = tiny_rec
    assert len(ds.train_samples) == len(ds.users)
    for s, seq in zip(ds.train_samples, ds.train):
        assert s.history == tuple(seq[:-1]) and s.targets == (seq[-1],)
    for s in ds.valid_samples:
        assert s.history == tuple(ds.train[s.sample_id])
        assert s.targets == (ds.valid[s.sample_id][0],)
    for s in ds.test_samples:
        i = s.sample_id
        assert s.history == tuple(ds.train[i] + ds.valid[i]) and s.targets == tuple(ds.test[i])
    assert len(ds.valid_samples) == sum(1 for v in ds.valid if v)


def test_single_item_users_are_kept_with_empty_history(tmp_path):
    folder = write_sequence_folder(tmp_path / "d", {1: [1], 2: [1, 2]}, {1: [], 2: []}, {1: [2], 2: []}, 3)
    ds = load_sequence_folder(folder)
    assert ds.train_samples[0].history == () and ds.train_samples[0].targets == (1,)
    assert dataset_stats(ds).empty_history == 1


def _valid_dirs(tmp_path):
    return write_sequence_folder(tmp_path / "d", {1: [1, 2], 2: [3]}, {1: [], 2: [1]}, {1: [3], 2: []}, 3)


@pytest.mark.parametrize(
    "file,content,expect",
    [
        ("sequential_train.txt", "1 1 2\n2 x\n", "sequential_train.txt:2: value 'x' is not an integer id"),
        ("sequential_train.txt", "1 1 2\n\n", "sequential_train.txt:2: empty line"),
        ("sequential_train.txt", "1 1 99\n2 3\n", "sequential_train.txt:1: item id 99 is not in items.tsv"),
        ("sequential_valid.txt", "2 1\n1\n", "sequential_valid.txt:1: user 2 is out of order"),
        ("sequential_test.txt", "", "sequential_test.txt: empty file"),
        ("items.tsv", "seq_id\titem_id\ttitle\tcategories\nabc\tA\tT\tC\n", "items.tsv:2: seq_id 'abc' is not an integer"),
        ("sequential_test.txt", "1 3\n", "has 1 users but sequential_train.txt has 2"),
    ],
)
def test_malformed_files_give_one_line_errors(tmp_path, file, content, expect):
    folder = _valid_dirs(tmp_path)
    (folder / file).write_text(content)
    with pytest.raises(DataError) as err:
        load_sequence_folder(folder)
    assert expect in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_is_named(tmp_path):
    folder = _valid_dirs(tmp_path)
    (folder / "items.tsv").unlink()
    with pytest.raises(DataError, match="items.tsv: file not found"):
        load_sequence_folder(folder)


def test_shipped_games_counts():
    ds = load_dataset("games")
    st = dataset_stats(ds)
    assert (st.users, st.items, st.test_users, st.valid_users) == (49_156, 17_332, 8_696, 9_609)
    assert st.test_targets == 19_733 and st.empty_history == 3_382
    assert ds.title(2) == "Anno 2070"


def test_ml100k_conversion_orders_by_time():
    ds = load_dataset("ml-100k")
    st = dataset_stats(ds)
    assert (st.users, st.items, st.interactions) == (943, 1_682, 100_000)
    assert all(len(v) == 1 for v in ds.valid) and all(len(t) == 1 for t in ds.test)
    assert ds.title(1) == "Toy Story (1995)"


class WordTokenizer:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


def test_prompt_drops_oldest_titles_to_fit():
    titles = [f"title{i}" for i in range(100)]
    full = build_prompt(titles, "game products", "answer", WordTokenizer(), max_tokens=10_000)
    assert full.kept_titles == 100 and "title0; title1" in full.prompt
    cut = build_prompt(titles, "game products", "answer", WordTokenizer(), max_tokens=80)
    assert 0 < cut.kept_titles < 100
    assert cut.prompt.rstrip().endswith("### Response:")
    assert f"title{100 - cut.kept_titles};" in cut.prompt and "title99" in cut.prompt
    assert len((cut.prompt + cut.response).split()) + 1 <= 80
    # one more title would not fit
    longer = render(titles[100 - cut.kept_titles - 1 :], "game products", "answer")
    assert len(longer.split()) + 1 > 80


def test_prompt_text_matches_reference_template():
    text = render(["A", "B"], "game products", "C")
    assert "### Instruction:\nGiven the game products that the user purchased before, please recommend a new game product" in text
    assert "with titles as: A; B\n\n### Response:\nC" in text


def test_duplicate_user_ids_are_refused_with_file_line_and_id(tmp_path):
    folder = _valid_dirs(tmp_path)
    (folder / "sequential_train.txt").write_text("1 1 2\n2 3\n1 2\n")
    with pytest.raises(DataError) as err:
        load_sequence_folder(folder)
    assert "sequential_train.txt:3: user 1 appears twice (first on line 1)" in str(err.value)


def test_users_without_training_items_are_validation_and_test_users(tmp_path):
    # user 2: no training items but a validation and a test item; user 3: a test item only
    folder = write_sequence_folder(tmp_path / "d", {1: [1, 2], 2: [], 3: []}, {1: [3], 2: [1], 3: []},
                                   {1: [1], 2: [2, 3], 3: [2]}, 3)
    ds = load_sequence_folder(folder)
    assert ds.users == [1, 2, 3]
    assert [(s.sample_id, s.user) for s in ds.train_samples] == [(0, 1)]  # no training sample for 2 and 3
    assert [(s.user, s.history, s.targets) for s in ds.valid_samples] == [(1, (1, 2), (3,)), (2, (), (1,))]
    assert [(s.user, s.history, s.targets) for s in ds.test_samples] == [
        (1, (1, 2, 3), (1,)), (2, (1,), (2, 3)), (3, (), (2,))]
    st = dataset_stats(ds)
    assert (st.users, st.train_samples, st.no_train_users, st.empty_history) == (3, 1, 2, 0)
    assert st.history_percentiles["max"] == 2  # lengths of the users with training items only
    assert ("users without training items (validation/test only)", "2") in st.rows()


def test_user_without_any_item_or_no_training_at_all_is_refused(tmp_path):
    folder = write_sequence_folder(tmp_path / "a", {1: [1, 2], 2: []}, {1: [], 2: []}, {1: [3], 2: []}, 3)
    with pytest.raises(DataError, match=r"sequential_train.txt:2: user 2 has no items in any split"):
        load_sequence_folder(folder)
    folder = write_sequence_folder(tmp_path / "b", {1: [], 2: []}, {1: [1], 2: []}, {1: [3], 2: [2]}, 3)
    with pytest.raises(DataError, match=r"sequential_train.txt: no user has training items"):
        load_sequence_folder(folder)


@pytest.mark.parametrize(
    "file,content,expect",
    [
        ("sequential_train.txt", b"1 1 2\n2 \xe9\n", "sequential_train.txt:2: not UTF-8 text (byte 0xe9"),
        ("sequential_valid.txt", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "sequential_valid.txt:1: not UTF-8 text (byte 0x89"),
        ("items.tsv", "seq_id\titem_id\ttitle\n1\tA\tCaf\u00e9\n".encode("latin-1"), "items.tsv:2: not UTF-8 text (byte 0xe9"),
        ("items.tsv", b"seq_id\titem_id\ttitle\n1\tA\t\"x\n", "items.tsv:2: unbalanced '\"'"),  # EOF inside quotes
        # an unclosed quote used to swallow the following lines (items 2 and 3) into item 1's title
        ("items.tsv", b"seq_id\titem_id\ttitle\n1\tA\t\"x\n2\tB\ty\n3\tC\tz\n", "items.tsv:2: unbalanced '\"'"),
    ],
)
def test_undecodable_or_unparsable_bytes_give_one_line_errors(tmp_path, file, content, expect):
    folder = _valid_dirs(tmp_path)
    (folder / file).write_bytes(content)
    with pytest.raises(DataError) as err:
        load_sequence_folder(folder)
    assert expect in str(err.value) and "\n" not in str(err.value)


def test_gzip_files_load_and_truncated_or_fake_gzip_is_refused(tmp_path):
    import gzip

    folder = _valid_dirs(tmp_path)
    train = folder / "sequential_train.txt"
    text = train.read_bytes()
    train.unlink()
    gz = folder / "sequential_train.txt.gz"
    gz.write_bytes(gzip.compress(text))
    assert len(load_sequence_folder(folder).train_samples) == 2
    gz.write_bytes(gzip.compress(text * 1)[:-12])
    with pytest.raises(DataError, match=r"sequential_train.txt.gz: truncated gzip file"):
        load_sequence_folder(folder)
    gz.write_bytes(text)
    with pytest.raises(DataError, match=r"sequential_train.txt.gz: not a valid gzip file"):
        load_sequence_folder(folder)


def test_read_helpers_turn_read_errors_into_data_errors(tmp_path):
    from leantune.io import open_text, read_json, read_jsonl

    (tmp_path / "a.json").write_bytes(b'{"title": "caf\xe9"}')
    with pytest.raises(DataError, match=r"a.json:1: not UTF-8 text \(byte 0xe9"):
        read_json(tmp_path / "a.json")
    (tmp_path / "b.jsonl").write_bytes(b'{"a": 1}\n' * 3000 + b'{"a": "\xff"}\n')
    with pytest.raises(DataError, match=r"b.jsonl:3001: not UTF-8"):  # the exact line, not the decoded chunk's
        read_jsonl(tmp_path / "b.jsonl")
    with pytest.raises(DataError, match="is a folder"):
        open_text(tmp_path)
    with pytest.raises(DataError, match="file not found"):
        open_text(tmp_path / "nope.txt")
    (tmp_path / "ok.txt").write_text("x\ny\n")
    with open_text(tmp_path / "ok.txt") as fh:
        assert fh.readline() == "x\n" and fh.read() == "y\n"


def test_one_training_subset_rule_for_every_command(tmp_path):
    """N training units with seed s are the same units in a curve's run, `attributes finetune
    --train-limit`, `finetune --budget` and a tuning study's --train-size: one permutation's prefix."""
    import json

    from typer.testing import CliRunner

    from leantune.cli import app
    from leantune.pipelines.units import select_units
    from leantune.data.units import nested_subsets, training_subset
    from leantune.errors import LeantuneError

    pool = [f"u{i}" for i in range(30)]
    nested = nested_subsets(pool, [5, 12, 30], seed=3)
    assert set(nested[5]) < set(nested[12]) < set(nested[30]) == set(pool)
    assert training_subset(pool, 12, 3) == nested[12]
    assert [pool[i] for i in select_units({}, 30, "random", 12, 3)] == sorted(nested[12], key=pool.index)  # prune --task sft
    assert training_subset(pool, 12, 4) != nested[12] and training_subset(pool, None, 3) == pool
    with pytest.raises(LeantuneError, match="size 31 is larger than the training pool"):
        training_subset(pool, 31, 0)

    from .attributes_fixtures import write_attribute_folder
    from leantune.tasks.attributes import AttributeTask

    folder = write_attribute_folder(tmp_path / "attrs")
    out = tmp_path / "ft"
    result = CliRunner().invoke(app, ["attributes", "finetune", "--data", str(folder), "--model", "tiny", "--train-limit", "5",
                                      "--seed", "2", "--max-steps", "1", "--eval-limit", "0", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    used = json.loads((out / "subset.json").read_text())["units"]
    assert used == training_subset(AttributeTask(data=str(folder)).train_pool(), 5, 2)
