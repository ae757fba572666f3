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
