"""Hugging Face Hub dataset files read through the packaged ``datasets`` builders.

A repository's own loading script is never looked up: the files are named (``hf_data_files``,
glob patterns inside the repository) and read with the ``json``, ``parquet`` or ``csv`` builder
from ``hf://datasets/<owner>/<name>/<file>``. With a mirror folder (config ``hub_mirror``) the
same calls read ``<mirror>/<owner>/<name>/<file>`` instead, so tests and air-gapped clusters run
the real ``datasets`` code on a local copy of a repository's exact layout.

Every failure (not found, gated, offline, a script-only repository, a pattern matching nothing)
becomes one :class:`~evalsel.core.io.InputError` naming the source and the setting to change.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

from evalsel.core.io import InputError

HF_ROOT = "hf://datasets"
BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".tsv": "csv"}


def repo_root(repo: str, mirror: str | os.PathLike | None = None) -> str:
    """Where ``repo``'s files are: ``hf://datasets/<repo>`` or ``<mirror>/<repo>``."""
    if mirror:
        return str(Path(mirror).resolve() / repo)
    return f"{HF_ROOT}/{repo}"


def data_file_urls(repo: str, patterns: str | list[str], mirror: str | os.PathLike | None = None) -> list[str]:
    """``patterns`` (paths or globs inside the repository) as data-file URLs or mirror paths."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    root = repo_root(repo, mirror)
    return [f"{root}/{p.lstrip('/')}" for p in patterns]


def builder_for(patterns: list[str], where: str, setting: str) -> str:
    """The packaged builder reading every pattern (they must share one kind of file)."""
    kinds = set()
    for p in patterns:
        suffix = Path(p).suffix.lower()
        if suffix not in BUILDERS:
            raise InputError(
                where,
                None,
                setting,
                f"cannot tell the file type of {p!r}: name files ending in {', '.join(sorted(BUILDERS))}",
            )
        kinds.add(BUILDERS[suffix])
    if len(kinds) != 1:
        raise InputError(where, None, setting, f"the files mix types ({', '.join(sorted(kinds))}); use one source each")
    return kinds.pop()


def _candidates(repo: str, mirror: str | os.PathLike | None) -> list[str]:
    """Data files of the repository worth naming in an error (mirror: the folder; hub: its file list)."""
    suffixes = tuple(BUILDERS)
    try:
        if mirror:
            root = Path(repo_root(repo, mirror))
            files = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
        else:
            from huggingface_hub import HfApi

            files = HfApi().list_repo_files(repo, repo_type="dataset")
    except Exception:  # offline or gated: the error message goes without the list
        return []
    return sorted(f for f in files if f.lower().endswith(suffixes))[:12]


# Exception classes (by name, anywhere in the chain) that mean "the network is not there", whatever the
# HTTP client: httpx's ConnectError is not the built-in ConnectionError, nor is requests'.
_NETWORK_ERRORS = {
    "ConnectError",
    "ConnectTimeout",
    "ConnectionError",
    "NameResolutionError",
    "MaxRetryError",
    "NewConnectionError",
    "gaierror",
    "ReadTimeout",
    "Timeout",
    "TimeoutException",
    "OfflineModeIsEnabled",
    "LocalEntryNotFoundError",
}


def is_network_error(exc: BaseException) -> bool:
    """True when ``exc`` or an exception it was raised from or during is a failure to reach the
    network (any HTTP client's connection, resolution or timeout error, or offline mode)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ConnectionError, TimeoutError)) or any(
            k.__name__ in _NETWORK_ERRORS for k in type(exc).__mro__
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def explain(exc: BaseException, repo: str, where: str, setting: str, mirror: str | os.PathLike | None) -> InputError:
    """One clear error for a failed hub load (``setting`` is the config key naming the files)."""
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub.errors import GatedRepoError, OfflineModeIsEnabled, RepositoryNotFoundError

    text = str(exc)
    if isinstance(exc, RuntimeError) and "Dataset scripts are no longer supported" in text:
        files = _candidates(repo, mirror)
        hint = f" (its data files include: {', '.join(files)})" if files else ""
        return InputError(
            where,
            None,
            setting,
            f"{repo} is read by a loading script, which datasets 4+ no longer runs: set {setting} "
            f"to the repository's data files{hint}",
        )
    if isinstance(exc, GatedRepoError) or "gated" in text.lower():
        return InputError(
            where,
            None,
            None,
            f"{repo} is gated: accept its terms on https://huggingface.co/datasets/{repo} and log in "
            "(`hf auth login` or HF_TOKEN), or set hub_mirror to a local copy",
        )
    if isinstance(exc, OfflineModeIsEnabled) or is_network_error(exc) or "offline" in text.lower():
        return InputError(
            where,
            None,
            None,
            f"cannot reach the Hugging Face Hub for {repo} ({type(exc).__name__}): connect, unset "
            "HF_HUB_OFFLINE, or set hub_mirror to a folder holding a copy of the repository "
            f"({repo}/...)",
        )
    if isinstance(exc, (DatasetNotFoundError, RepositoryNotFoundError)):
        return InputError(
            where,
            None,
            None,
            f"dataset {repo} was not found on the Hub{' mirror ' + str(mirror) if mirror else ''} "
            "(check the name; a private repository needs a token)",
        )
    if isinstance(exc, FileNotFoundError):
        files = _candidates(repo, mirror)
        hint = f"; the repository has: {', '.join(files)}" if files else ""
        return InputError(where, None, setting, f"no file of {repo} matches {setting}{hint} ({text[:200]})")
    if isinstance(exc, ValueError):  # unknown split or configuration
        return InputError(where, None, None, f"cannot load {repo}: {text[:300]}")
    return InputError(where, None, None, f"cannot load {repo}: {type(exc).__name__}: {text[:300]}")


def load_files(
    repo: str,
    patterns: str | list[str],
    *,
    where: str,
    setting: str,
    split: str = "train",
    streaming: bool = False,
    mirror: str | os.PathLike | None = None,
) -> Any:
    """``datasets.load_dataset(<builder>, data_files=...)`` of ``repo``'s files (hub or mirror).

    Every file becomes the one split ``split`` (the packaged builders name it "train")."""
    import datasets

    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    builder = builder_for(patterns, where, setting)
    urls = data_file_urls(repo, patterns, mirror)
    if mirror:
        missing = [p for p, u in zip(patterns, urls) if not glob.glob(u)]
        if missing:
            raise explain(
                FileNotFoundError(f"nothing matches {missing[0]!r} under {repo_root(repo, mirror)}"),
                repo,
                where,
                setting,
                mirror,
            )
    try:
        return datasets.load_dataset(builder, data_files={split: urls}, split=split, streaming=streaming)
    except Exception as exc:
        raise explain(exc, repo, where, setting, mirror) from None


def load_repo(
    repo: str,
    config: str | None,
    *,
    where: str,
    setting: str,
    split: str = "train",
    streaming: bool = False,
    mirror: str | os.PathLike | None = None,
) -> Any:
    """The repository's own layout (its README configs or data folder), for repositories without
    a loading script; a script-only one is refused, naming ``setting`` and its data files."""
    import datasets

    path = repo_root(repo, mirror) if mirror else repo
    if mirror and not Path(path).is_dir():
        raise InputError(where, None, None, f"dataset {repo} is not in the hub mirror {mirror} (no folder {path})")
    try:
        return datasets.load_dataset(path, config, split=split, streaming=streaming)
    except Exception as exc:
        raise explain(exc, repo, where, setting, mirror) from None
