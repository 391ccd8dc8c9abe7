"""Real CMS NanoAOD: the two small samples coffea ships in its source distribution (Drell-Yan and dimuon
events, 40 each, ~1,500 branches), fetched once from PyPI into the user's cache and checked against the sha256
PyPI publishes, so tests can run on files CMS software wrote and not only on our own generator's."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

SDIST = "coffea-2026.9.0"
URL = (
    "https://files.pythonhosted.org/packages/d8/d4/9d0d3bde546435ccb1dd917b9ca6501834f5e3b4c5852c1abb59c7c11203/"
    f"{SDIST}.tar.gz"
)
SHA256 = "7dfc1b54d9d1533c8a5bd8a5786d13272ea1a170b0817061d4478f721aedae04"
SAMPLES = ("nano_dy.root", "nano_dimuon.root")


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "datalake" / "cms-nanoaod"


def fetch(cache: Path | None = None) -> list[Path]:
    """The samples' local paths, downloading and extracting them on first use (atomic renames: a killed
    download leaves nothing that looks complete)."""
    folder = cache or cache_dir()
    paths = [folder / name for name in SAMPLES]
    if all(p.exists() for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        archive = Path(tmp) / f"{SDIST}.tar.gz"
        digest = hashlib.sha256()
        with urllib.request.urlopen(URL, timeout=60) as response, archive.open("wb") as out:
            while block := response.read(1 << 20):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != SHA256:
            raise RuntimeError(f"{URL}: sha256 {digest.hexdigest()} is not the published {SHA256}")
        with tarfile.open(archive) as tar:
            for path in paths:
                member = tar.extractfile(f"{SDIST}/tests/samples/{path.name}")
                part = Path(tmp) / path.name
                with part.open("wb") as out:
                    shutil.copyfileobj(member, out)
                part.replace(path)
    return paths
