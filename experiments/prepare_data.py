"""Downloads McAuley's public Amazon review files for a category and writes the P5 format.

    python -m experiments.prepare_data --category=Beauty --version=2014 --out_dir=data/beauty

Sources:
  2014, "Amazon product data" (He & McAuley WWW'16; McAuley et al. SIGIR'15):
    http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/reviews_<Category>_5.json.gz
    http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/meta_<Category>.json.gz
    The 5-core review files are already 5-core. P5, S3-Rec, TIGER and LETTER's Beauty, Sports
    and Toys come from here (categories Beauty, Sports_and_Outdoors, Toys_and_Games).
  2018, "Amazon Review Data" (Ni, Li & McAuley EMNLP'19):
    https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/ followed by
      categoryFilesSmall/<Category>_5.json.gz and metaFiles2/meta_<Category>.json.gz
    LETTER/CollisionGenRec's Scientific is category Industrial_and_Scientific.
Both are for research use; cite the papers above.

Downloads go to --raw_dir under a temporary name and are renamed when complete, so an
interrupted download is never read; files already there are reused. The conversion is
`sgrec_jax.data.formats.amazon_raw` (tested); this script only adds the download.
"""

from __future__ import annotations

import os
import shutil
import sys
import urllib.request

from absl import app, flags

import sgrec_jax.registration  # noqa: F401  (registers everything a config names)
from sgrec_jax.core.files import atomic_write
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.formats.amazon_raw import load_amazon_raw
from sgrec_jax.data.formats.p5 import write_p5

URLS = {
    "2014": (
        "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/reviews_{c}_5.json.gz",
        "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/meta_{c}.json.gz",
    ),
    "2018": (
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/categoryFilesSmall/"
        "{c}_5.json.gz",
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/metaFiles2/meta_{c}.json.gz",
    ),
}

_CATEGORY = flags.DEFINE_string("category", None, "Category, e.g. Beauty.", required=True)
_VERSION = flags.DEFINE_enum("version", "2014", list(URLS), "Amazon data release.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where to write the P5 folder.", required=True)
_RAW_DIR = flags.DEFINE_string("raw_dir", "data/raw", "Cache of downloaded raw files.")
_KCORE = flags.DEFINE_integer("kcore", 5, "Iterative k-core on users and items (<= 1: none).")


def download(url: str, raw_dir: str) -> str:
    """The cached copy of `url` in raw_dir, downloaded first if absent."""
    path = os.path.join(raw_dir, url.rsplit("/", 1)[-1])
    if not os.path.exists(path):
        print(f"downloading {url}")
        with urllib.request.urlopen(url, timeout=60) as response:
            atomic_write(path, lambda f: shutil.copyfileobj(response, f, 1 << 20))
    return path


def main(argv: list[str]) -> None:
    del argv
    reviews_url, meta_url = (u.format(c=_CATEGORY.value) for u in URLS[_VERSION.value])
    reviews = download(reviews_url, _RAW_DIR.value)
    meta = download(meta_url, _RAW_DIR.value)
    try:
        dataset = load_amazon_raw(
            reviews, meta, name=_CATEGORY.value.lower(), kcore=_KCORE.value
        )
    except DataFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    for path in write_p5(dataset, _OUT_DIR.value):
        print(f"wrote {path}")
    print(dataset.stats())


if __name__ == "__main__":
    app.run(main)
