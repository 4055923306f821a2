"""Real text for calibration and evaluation: Jane Austen's novels, offline.

The novels come from Debian's ``r-cran-janeaustenr`` package (an R lazy-load database,
read with the PyPI package ``rdata``). Calibration text is *Emma*; evaluation text is
*Pride and Prejudice*; the two are never mixed. The ``.deb`` is fetched once with
``apt-get download`` into ``$OQ_CACHE/downloads``, and each book is cached as plain text.
"""

from __future__ import annotations

import gzip
import hashlib
import pathlib
import re
import shutil
import subprocess
import tempfile
import zlib

import numpy as np

from oqcompile.cache import cache_dir, making
from oqcompile.errors import OQError

__all__ = ["CALIBRATION_BOOK", "EVALUATION_BOOK", "book_text", "book_tokens"]

CALIBRATION_BOOK = "emma"
EVALUATION_BOOK = "prideprejudice"
_DEB = "r-cran-janeaustenr"
_DATA_DIR = "usr/lib/R/site-library/janeaustenr/data"
# The files of a Hugging Face directory that decide its tokenizer (not the model weights).
_TOKENIZER_FILES = re.compile(r"token|vocab|merges|\.model$|^config\.json$")


def book_text(book: str) -> str:
    """The full text of ``book`` (``emma``, ``prideprejudice``, ...), lines joined by newlines."""
    cached = cache_dir("text") / f"{book}.txt"
    with making(cached):
        if not cached.is_file():
            partial = cached.with_suffix(".part")  # an interrupted write leaves no text
            partial.write_text("\n".join(_read_lazyload_db(_data_dir(), book)), encoding="utf-8")
            partial.rename(cached)
    return cached.read_text(encoding="utf-8")


def book_tokens(book: str, tokenizer_id: str) -> np.ndarray:
    """``book`` tokenized without special tokens by the tokenizer of ``tokenizer_id`` (a model id
    or a local HF directory), as int64; cached per tokenizer."""
    cached = cache_dir("tokens") / f"{_tokenizer_key(tokenizer_id)}-{book}.npy"
    with making(cached):
        if not cached.is_file():
            from oqcompile.models import load_tokenizer

            ids = load_tokenizer(tokenizer_id)(book_text(book), add_special_tokens=False)["input_ids"]
            partial = cached.with_suffix(".part")
            with open(partial, "wb") as file:
                np.save(file, np.asarray(ids, dtype=np.int64))
            partial.rename(cached)
    return np.load(cached)


def _tokenizer_key(tokenizer_id: str) -> str:
    """A model id as it is; a local directory by its name and a digest of its tokenizer files, so
    that two directories of the same name (or one whose tokenizer changed) never share a cache."""
    directory = pathlib.Path(tokenizer_id)
    if not directory.is_dir():
        return tokenizer_id
    digest = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        if path.is_file() and _TOKENIZER_FILES.search(path.name):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"{directory.name}-{digest.hexdigest()[:16]}"


def _data_dir() -> pathlib.Path:
    installed = pathlib.Path("/") / _DATA_DIR
    if (installed / "Rdata.rdb").is_file():
        return installed
    extracted = cache_dir("janeaustenr")
    with making(extracted):
        if not (extracted / _DATA_DIR / "Rdata.rdb").is_file():
            _unpack_package(extracted)
    return extracted / _DATA_DIR


def _unpack_package(extracted: pathlib.Path) -> None:
    """Unpack the Debian package (downloaded into the cache first if it is not there) into ``extracted``."""
    downloads = cache_dir("downloads")
    debs = sorted(downloads.glob(f"{_DEB}_*.deb"))
    if not debs:
        try:
            subprocess.run(["apt-get", "download", _DEB], cwd=downloads, check=True,
                           capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as error:
            raise OQError(f"cannot obtain the Jane Austen text: install the Debian package {_DEB} "
                          f"(apt-get install {_DEB}) or put its .deb into {downloads}") from error
        debs = sorted(downloads.glob(f"{_DEB}_*.deb"))
    staging = pathlib.Path(tempfile.mkdtemp(dir=extracted))
    try:
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(staging)], check=True, capture_output=True)
        shutil.copytree(staging / "usr", extracted / "usr", dirs_exist_ok=True)
    except (OSError, subprocess.CalledProcessError) as error:
        raise OQError(f"cannot unpack {debs[-1]} (needs dpkg-deb): {error}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _read_lazyload_db(directory: pathlib.Path, name: str) -> list[str]:
    """Read object ``name`` from R's lazy-load database ``Rdata.rdx``/``Rdata.rdb``.

    The index (``.rdx``, gzip) maps names to (offset, length) in the ``.rdb``; each record is
    a 4-byte length followed by a zlib stream of an R serialization.
    """
    import rdata

    index = rdata.conversion.convert(rdata.parser.parse_data(
        gzip.decompress((directory / "Rdata.rdx").read_bytes())))
    entries = {str(k): v for k, v in index["variables"].items()}
    if name not in entries:
        raise OQError(f"no book {name!r} in janeaustenr (has {', '.join(sorted(entries))})")
    offset, length = (int(v) for v in entries[name])
    with open(directory / "Rdata.rdb", "rb") as db:
        db.seek(offset)
        record = db.read(length)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lines = rdata.conversion.convert(rdata.parser.parse_data(zlib.decompress(record[4:])))
    return [str(line) for line in lines]
