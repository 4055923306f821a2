"""The book text and its token cache."""

import numpy as np

from conftest import save_tokenizer
from oqcompile.data import CALIBRATION_BOOK, book_tokens
from oqcompile.models import load_tokenizer

TEXT = "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition. " * 20


def test_tokenizer_directories_of_the_same_name_keep_their_own_tokens(tmp_path, monkeypatch):
    """The token cache is keyed by the tokenizer's files, not by its folder's name."""
    monkeypatch.setenv("OQ_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "text").mkdir(parents=True)
    (tmp_path / "cache" / "text" / f"{CALIBRATION_BOOK}.txt").write_text(TEXT)
    small = save_tokenizer(tmp_path / "a" / "tokenizer", TEXT, vocab_size=40)
    large = save_tokenizer(tmp_path / "b" / "tokenizer", TEXT, vocab_size=80)
    for directory in (small, large, small):
        expected = load_tokenizer(str(directory))(TEXT, add_special_tokens=False)["input_ids"]
        np.testing.assert_array_equal(book_tokens(CALIBRATION_BOOK, str(directory)), expected)
    assert len(list((tmp_path / "cache" / "tokens").iterdir())) == 2
