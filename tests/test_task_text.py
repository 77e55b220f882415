"""Text (IMDb bytes): every source format read from a fixture written here, ids, lengths, splits."""

import numpy as np
import pytest

import tasks
from lra_base.errors import ConfigError, DataError, MissingDataError
from lra_fixtures import imdb_reviews, write_aclimdb_folder, write_aclimdb_tar, write_imdb_hub
from lra.core.data import BatchView

TASK = tasks.get("text")


@pytest.fixture(scope="module")
def reviews():
    rng = np.random.default_rng(0)
    splits = {"train": imdb_reviews(rng, 6), "test": imdb_reviews(rng, 4)}
    long = "\u00e9" * 2500  # 5,000 UTF-8 bytes: cut to 4,000
    splits["train"].append((1, 99999, 10, long))
    return splits


def expected(rows):
    """(label, bytes) in the loader's order: label, then numeric id."""
    return [(label, text.encode("utf-8")) for label, ident, _, text in sorted(rows, key=lambda r: (r[0], r[1]))]


def stored(split):
    return [(int(split.labels[i]), bytes(split.tokens[i, 0, : split.lengths[i, 0]])) for i in range(len(split))]


def test_folder_ids_are_bytes_lengths_are_capped_and_test_doubles_as_val(tmp_path, reviews):
    write_aclimdb_folder(tmp_path, reviews)
    train = TASK.prepared(tmp_path, "train")
    want = [(label, data[:4000]) for label, data in expected(reviews["train"])]
    assert stored(train) == want
    assert train.lengths.max() == 4000 and train.meta["skipped"] == {"truncated": 1}
    assert TASK.token_offset == 1 and TASK.vocab_size == 257
    val, test = TASK.prepared(tmp_path, "val"), TASK.prepared(tmp_path, "test")
    assert stored(val) == stored(test) == expected(reviews["test"])
    assert list(train.labels).count(0) == 6 and list(train.labels).count(1) == 7


def test_batches_shift_bytes_by_one_and_mask_only_padding(tmp_path, reviews):
    write_aclimdb_folder(tmp_path, reviews)
    split = TASK.prepared(tmp_path, "test")
    batch = BatchView(split, 64)[np.arange(len(split))]
    first = expected(reviews["test"])[0][1]
    n = min(len(first), 64)
    assert batch["ids"][0, 0, :n].tolist() == [b + 1 for b in first[:n]]
    assert batch["mask"][0, 0].sum() == n
    assert (batch["ids"][~batch["mask"]] == 0).all()


def test_archive_and_hub_copies_give_the_same_tokens_as_the_folder(tmp_path, reviews):
    folder_dir, tar_dir, disk_dir, pq_dir = (tmp_path / n for n in ("f", "t", "d", "p"))
    write_aclimdb_folder(folder_dir, reviews)
    write_aclimdb_tar(tar_dir / "downloads" / "aclImdb_v1.tar.gz", reviews)
    ordered = {s: sorted(rows, key=lambda r: (r[0], r[1])) for s, rows in reviews.items()}
    write_imdb_hub(disk_dir, ordered, layout="disk")
    write_imdb_hub(pq_dir, ordered, layout="parquet", repo="imdb")  # the older hub id
    for split in ("train", "val"):
        ref = stored(TASK.prepared(folder_dir, split))
        for other in (tar_dir, disk_dir, pq_dir):
            assert stored(TASK.prepared(other, split)) == ref, (other, split)


def test_source_option_picks_a_source_and_is_checked(tmp_path, reviews):
    write_aclimdb_folder(tmp_path, {s: rows[:2] + rows[-2:] for s, rows in reviews.items()})
    write_imdb_hub(tmp_path, reviews)
    assert len(TASK.prepared(tmp_path, "train")) == 4  # the folder comes first
    assert len(TASK.prepared(tmp_path, "train", {"source": "hub"})) == len(reviews["train"])
    with pytest.raises(ConfigError, match="source must be one of"):
        TASK.prepared(tmp_path, "train", {"source": "web"})


def test_missing_data_names_every_place_looked_and_the_commands(tmp_path):
    with pytest.raises(MissingDataError) as err:
        TASK.prepared(tmp_path, "train")
    msg = str(err.value)
    for where in ("aclImdb", "aclImdb_v1.tar.gz", "downloads/aclImdb_v1.tar.gz", "hf/stanfordnlp/imdb", "hf/imdb"):
        assert str(tmp_path / where) in msg
    assert "lra data download text" in msg and "--source hub" in msg


@pytest.mark.parametrize("name,problem", [("12_5.txt", "does not fit"), ("notes.txt", "unexpected file name")])
def test_malformed_folder_names_the_file(tmp_path, reviews, name, problem):
    base = write_aclimdb_folder(tmp_path, reviews)
    (base / "train" / "pos" / name).write_text("x")
    with pytest.raises(DataError, match=problem) as err:
        TASK.prepared(tmp_path, "train")
    assert name in str(err.value)


def test_truncated_archive_is_a_data_error_naming_it(tmp_path, reviews):
    path = write_aclimdb_tar(tmp_path / "aclImdb_v1.tar.gz", reviews)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        TASK.prepared(tmp_path, "train")
    assert "aclImdb_v1.tar.gz" in str(err.value)


def test_hub_copy_with_wrong_columns_or_labels_is_a_data_error(tmp_path):
    import datasets

    target = tmp_path / "hf" / "stanfordnlp" / "imdb"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"review": ["a"], "label": [0]}),
                          "test": datasets.Dataset.from_dict({"text": ["b"], "label": [-1]})}).save_to_disk(str(target))
    with pytest.raises(DataError, match="column"):
        TASK.prepared(tmp_path, "train")
    with pytest.raises(DataError, match="'label' must be 0"):
        TASK.prepared(tmp_path, "test")
