"""Fetching the official raw files when ``dataset.root`` is empty.

A file is streamed into ``<cache_dir>/<dataset>/raw/`` under a temporary name with a rich progress
bar, checked against the server's Content-Length and the known size / checksum, and renamed only
when it verifies (a failed or interrupted download never leaves a file under the real name). A
file already present with the right size is not fetched again. Without network the error is one
line saying which file to fetch from where, where to put it, or to set ``dataset.root``.

Checksums: GroupLens publishes an MD5 per MovieLens archive (used here, with the archive sizes);
the Amazon 2014 files (McAuley, snap.stanford.edu) come with no published size or checksum, so
they are checked against Content-Length only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from ctrbench.datasets.cache import cache_root
from ctrbench.datasets.rawfiles import DatasetError

_CHUNK = 1 << 20
TIMEOUT_S = 60


class DownloadError(DatasetError):
    """A download failed or did not verify; the message says how to provide the file by hand."""


@dataclass(frozen=True)
class RemoteFile:
    """One official file: its name on disk, its URL and what is known to verify it."""

    name: str
    url: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None


def raw_folder(dataset: str, cache_dir: str = "") -> Path:
    """Where downloaded raw files of a dataset live: ``<cache_dir>/<dataset>/raw``."""
    return cache_root(cache_dir) / dataset / "raw"


def _by_hand(remote: RemoteFile, folder: Path) -> str:
    return (
        f"download {remote.url} yourself and put it in {folder}, or set dataset.root to a folder "
        f"that holds {remote.name}"
    )


def _verify(remote: RemoteFile, path: Path, expected_size: int | None, md5: str, sha256: str) -> None:
    size = path.stat().st_size
    problems = []
    for what, want in (("server's Content-Length", expected_size), ("known size", remote.size)):
        if want is not None and size != want:
            problems.append(f"{size:,} bytes received, {what} is {want:,}")
    if remote.md5 and md5 != remote.md5:
        problems.append(f"md5 {md5} != published {remote.md5}")
    if remote.sha256 and sha256 != remote.sha256:
        problems.append(f"sha256 {sha256} != expected {remote.sha256}")
    if problems:
        raise DownloadError(f"{remote.name} from {remote.url} did not verify ({'; '.join(problems)})")


def fetch(remote: RemoteFile, folder: Path, console: Console | None = None) -> Path:
    """``folder/remote.name``, downloaded and verified first unless already there."""
    target = folder / remote.name
    if target.is_file() and (remote.size is None or target.stat().st_size == remote.size):
        return target
    console = console or Console(stderr=True)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {folder} ({exc}); {_by_hand(remote, folder)}") from exc
    fd, tmp_name = tempfile.mkstemp(prefix=f".{remote.name}.", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(remote.url, timeout=TIMEOUT_S)  # noqa: S310 - fixed URLs
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                raise DownloadError(
                    f"cannot download {remote.name} from {remote.url} ({reason}); {_by_hand(remote, folder)}"
                ) from exc
            with response:
                length = response.headers.get("Content-Length")
                expected = int(length) if length and length.isdigit() else None
                columns = (
                    TextColumn(f"[bold]{remote.name}"),
                    BarColumn(),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                )
                with Progress(*columns, console=console, transient=False) as progress:
                    task = progress.add_task("download", total=expected or remote.size)
                    try:
                        while chunk := response.read(_CHUNK):
                            out.write(chunk)
                            md5.update(chunk)
                            sha256.update(chunk)
                            progress.advance(task, len(chunk))
                    except (OSError, urllib.error.URLError) as exc:
                        raise DownloadError(
                            f"download of {remote.name} from {remote.url} broke off ({exc}); "
                            f"{_by_hand(remote, folder)}"
                        ) from exc
        _verify(remote, tmp, expected, md5.hexdigest(), sha256.hexdigest())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def unzip(archive: Path, folder: Path) -> Path:
    """Extract ``archive`` into ``folder`` (into a temporary folder first, then renamed) and return
    the folder it became: the archive's single top-level directory (``folder/ml-100k``), else
    ``folder/<archive name without .zip>``."""
    try:
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if n.strip("/")]
            tops = {Path(n).parts[0] for n in names}
            nested = len(tops) == 1 and any(len(Path(n).parts) > 1 for n in names)
            final = folder / (tops.pop() if nested else archive.name.removesuffix(".zip"))
            if final.is_dir():
                return final
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".unzip", dir=folder))
            try:
                z.extractall(tmp)
                os.replace(tmp / final.name if nested else tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except zipfile.BadZipFile as exc:
        archive.unlink(missing_ok=True)
        raise DownloadError(
            f"{archive} is not a valid zip archive ({exc}); it was removed, run again"
        ) from exc
    return final
