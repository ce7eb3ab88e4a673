"""OUT on object storage (an fsspec URL such as `s3://bucket/prefix`): the run works in a local staging
folder and the bucket holds the truth.

- Before the run the staging folder is emptied and filled from the bucket: config.yaml and every committed
  source (`_state/sources/<key>/`: its clips first, `record.json` last, so a source counts as committed in
  the bucket only once all of it is there). A run killed at any moment therefore resumes from what the
  bucket holds; sources committed locally but not yet uploaded are simply redone (same ids, same bytes).
- Each source is uploaded as it is committed (by the driver, as results arrive).
- At the end the shards (those of an earlier attempt that the plan no longer names are deleted), the
  parquet files, the report with its figures and, last, dataset.json (the marker of a complete folder).
Every object is written whole (an object store never shows a partial object). The staging folder is
`$VFM_CURATE_STAGING/<hash of the URL>` (default `~/.cache/vfm-curate/staging`); its lock keeps a second
run on this machine out, but nothing stops a run on another machine from writing the same prefix. On
several Ray nodes the staging folder must be on storage every node mounts (as a local OUT must be).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.errors import CurateError, OutputError

LOCAL_PROTOCOLS = ("file", "local")


def is_remote(out: str | os.PathLike) -> bool:
    text = str(out)
    return "://" in text and text.split("://", 1)[0] not in LOCAL_PROTOCOLS


def staging_root() -> Path:
    return Path(os.environ.get("VFM_CURATE_STAGING") or Path.home() / ".cache" / "vfm-curate" / "staging")


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


@dataclass
class RemoteOut:
    url: str
    local: Path
    fs: Any
    root: str  # the URL's path inside its filesystem (no protocol)

    @classmethod
    def open(cls, url: str) -> RemoteOut:
        import fsspec

        url = url.rstrip("/")
        try:
            fs, root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise CurateError(f"--out {url}: {_reason(exc)}") from None
        local = staging_root() / hashlib.sha256(url.encode()).hexdigest()[:16]
        return cls(url, local, fs, root.rstrip("/"))

    def _r(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def _fail(self, what: str, exc: BaseException) -> OutputError:
        return OutputError(f"cannot {what} {self.url}: {_reason(exc)}")

    def check(self) -> None:
        """Refuse a prefix that holds objects but no curation run (one line, exit 2)."""
        self.fs.invalidate_cache()
        try:
            names = [p.rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)] \
                if self.fs.exists(self.root) else []
        except Exception as exc:  # noqa: BLE001 - every store raises its own types
            raise CurateError(f"cannot read --out {self.url}: {_reason(exc)}") from None
        if names and "config.yaml" not in names and set(names) - {"_state"}:
            raise CurateError(f"--out {self.url} is not empty and holds no curation run (no config.yaml)")

    def pull(self) -> None:
        """Empty the staging folder and fill it with config.yaml and the committed sources of the bucket."""
        self.local.mkdir(parents=True, exist_ok=True)
        self.fs.invalidate_cache()  # listings cached by an earlier run in this process are stale
        for child in self.local.iterdir():  # everything but the lock this run holds
            if child.name == "_state" and child.is_dir():
                for sub in child.iterdir():
                    if sub.name != "lock":
                        shutil.rmtree(sub) if sub.is_dir() else sub.unlink()
            else:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        try:
            if self.fs.exists(self._r("config.yaml")):
                self.fs.get_file(self._r("config.yaml"), str(self.local / "config.yaml"))
            sources = self._r("_state/sources")
            if not self.fs.exists(sources):
                return
            for rec in self.fs.glob(f"{sources}/*/record.json"):
                key = rec.rsplit("/", 2)[-2]
                dest = self.local / "_state" / "sources" / key
                dest.mkdir(parents=True, exist_ok=True)
                for obj in self.fs.ls(f"{sources}/{key}", detail=False):
                    self.fs.get_file(obj, str(dest / obj.rsplit("/", 1)[-1]))
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise CurateError(f"cannot read --out {self.url}: {_reason(exc)}") from None

    def put(self, rel: str) -> None:
        """Upload one staged file to the same relative name."""
        try:
            self.fs.put_file(str(self.local / rel), self._r(rel))
        except Exception as exc:  # noqa: BLE001
            raise self._fail("write", exc) from None

    def push_source(self, key: str) -> None:
        """Upload a committed source: its clips, then record.json (the commit marker)."""
        folder = self.local / "_state" / "sources" / key
        if not (folder / "record.json").is_file():
            return
        rel = f"_state/sources/{key}"
        try:
            remote = self._r(rel)
            if self.fs.exists(remote):  # a retried source replaces its old commit
                self.fs.rm(remote, recursive=True)
        except Exception as exc:  # noqa: BLE001
            raise self._fail("write", exc) from None
        for f in sorted(folder.iterdir()):
            if f.name != "record.json":
                self.put(f"{rel}/{f.name}")
        self.put(f"{rel}/record.json")

    def push_outputs(self) -> None:
        """Shards, parquet files, the report and its figures, then dataset.json."""
        local_shards = sorted(p.name for p in (self.local / "shards").glob("*.tar"))
        for name in local_shards:
            self.put(f"shards/{name}")
        try:
            if self.fs.exists(self._r("shards")):
                for obj in self.fs.ls(self._r("shards"), detail=False):
                    if obj.rsplit("/", 1)[-1] not in local_shards:
                        self.fs.rm(obj)
        except Exception as exc:  # noqa: BLE001
            raise self._fail("write", exc) from None
        for f in sorted(self.local.iterdir()):
            if f.is_file() and f.name not in ("dataset.json",) and not f.name.startswith("."):
                self.put(f.name)
        for name in ("shards.json", "run.json", "summary.json"):
            if (self.local / "_state" / name).is_file():
                self.put(f"_state/{name}")
        self.put("dataset.json")
