"""report.md and its figures, from OUT's parquet files (so `vfm-curate report OUT` can rewrite it)."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from curate.errors import CurateError, writing
from curate.ids import path_text, source_key
from curate.stages.write.charts import funnel_png, histograms_png
from curate.state import THUMB_HEIGHT, sources_dir, thumbnail_name
from dataload.clip_record import REJECT_REASONS
from dataload.files import atomic_write_bytes, atomic_write_text, open_regular, read_regular

SCORES = ("motion", "jitter", "sharpness", "brightness", "aesthetic")
FIGURES = ("scores.png", "funnel.png", "contact_sheet.png")


def _reason_group(reason: str) -> str:
    return "duplicate_of" if reason.startswith("duplicate_of:") else reason


def _save(data: bytes, path: Path) -> None:
    with writing(path):
        atomic_write_bytes(path, data)


def _thresholds(out: Path) -> dict[str, list[float]]:
    """The filter thresholds of the run (config.yaml), drawn on the histograms."""
    import yaml

    try:
        cfg = yaml.safe_load((out / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    f = cfg.get("filters") or {}
    aes = ((cfg.get("models") or {}).get("aesthetic") or {})
    pick = {"motion": ["min_motion"], "jitter": ["max_jitter"], "sharpness": ["min_sharpness"],
            "brightness": ["min_brightness", "max_brightness"]}
    lines = {k: [float(f[n]) for n in names if isinstance(f.get(n), (int, float))] for k, names in pick.items()}
    if aes.get("enabled") and isinstance(aes.get("threshold"), (int, float)):
        lines["aesthetic"] = [float(aes["threshold"])]
    return lines


def _histograms(clips: dict, path: Path, thresholds: dict[str, list[float]] | None = None) -> None:
    kept = np.array([s == "kept" for s in clips["status"]], dtype=bool)
    panels = []
    for name in SCORES:
        vals = np.array([np.nan if v is None else v for v in clips[name]], dtype=float)
        ok = ~np.isnan(vals)
        panels.append((name, vals[ok & kept], vals[ok & ~kept], (thresholds or {}).get(name, [])))
    _save(histograms_png(panels), path)


def _middle_frame(mp4: bytes) -> np.ndarray | None:
    """The middle frame of an mp4 (decoding stops there)."""
    import av

    try:
        with av.open(io.BytesIO(mp4)) as c:
            st = c.streams.video[0]
            st.thread_type = "AUTO"  # the report runs once the workers are done: every core is free
            want = max(0, (st.frames or 0) // 2)
            last = None
            for i, frame in enumerate(c.decode(st)):
                last = frame
                if i >= want:
                    break
            return None if last is None else last.to_ndarray(format="rgb24")
    except av.error.FFmpegError:
        return None


def _decoded_thumbnails(shards: list[Path], keys: list[str], thumb_h: int) -> dict:
    """{clip id: its middle frame decoded from the shards, `thumb_h` rows} (a run without saved thumbnails)."""
    from PIL import Image

    from dataload.shards import read_shard

    want = set(keys)
    thumbs: dict = {}
    for shard in shards:
        if len(thumbs) == len(want):
            break
        for sample in read_shard(shard):
            if sample["__key__"] in want and "mp4" in sample:
                frame = _middle_frame(sample["mp4"])
                if frame is not None:
                    img = Image.fromarray(frame)
                    w = max(1, round(img.width * thumb_h / img.height))
                    thumbs[sample["__key__"]] = img.resize((w, thumb_h), Image.BILINEAR)
    return thumbs


def _saved_thumbnails(out: Path, ids: list[str], source_of: dict[str, str]) -> dict:
    """The thumbnails saved beside the committed clips (curate.state.thumbnail_name), as PIL images."""
    from PIL import Image

    found = {}
    for cid in ids:
        path = sources_dir(out) / source_key(source_of.get(cid, "")) / thumbnail_name(cid)
        try:
            img = Image.open(io.BytesIO(read_regular(path, "thumbnail", 4 << 20)))
            img.load()
        except Exception:  # noqa: BLE001 - missing (an older run) or unreadable: decoded from the shard instead
            continue
        if img.height == THUMB_HEIGHT:
            found[cid] = img.convert("RGB")
    return found


def _contact_sheet(out: Path, kept_ids: list[str], path: Path, source_of: dict[str, str], limit: int = 16,
                   cols: int = 4, thumb_h: int = THUMB_HEIGHT) -> int:
    """A grid of the middle frames of the first kept clips, each labelled with its clip id prefix: the
    thumbnails saved when the clips were encoded, else frames decoded from the shards."""
    from PIL import Image, ImageDraw

    want = kept_ids[:limit]
    thumbs = _saved_thumbnails(out, want, source_of)
    missing = [k for k in want if k not in thumbs]
    if missing:
        thumbs.update(_decoded_thumbnails(sorted((out / "shards").glob("shard-*.tar")), missing, thumb_h))
    order = [k for k in kept_ids if k in thumbs]
    cell_w = max([t.width for t in thumbs.values()] + [thumb_h])
    label, pad = 14, 4
    rows = max(1, -(-len(order) // cols))
    sheet = Image.new("RGB", (cols * (cell_w + pad) + pad, rows * (thumb_h + label + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i, key in enumerate(order):
        x = pad + (i % cols) * (cell_w + pad)
        y = pad + (i // cols) * (thumb_h + label + pad)
        draw.text((x, y), key[:8], fill=(0, 0, 0))
        sheet.paste(thumbs[key], (x, y + label))
    if not order:
        draw.text((pad, pad), "no kept clips", fill=(0, 0, 0))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    with writing(path):
        atomic_write_bytes(path, buf.getvalue())
    return len(order)


def _decode_error_lines(sources: dict) -> list[str]:
    """Sources that were curated although some of their frames could not be decoded (tolerant decoding
    skipped and counted them): the report says which, so damaged inputs are not mistaken for clean ones."""
    hit = [(src, int(n)) for src, st, n in zip(sources["source"], sources["status"], sources["decode_errors"])
           if st == "done" and n]
    if not hit:
        return []
    total = sum(n for _, n in hit)
    names = ", ".join(f"{src} ({n})" for src, n in hit[:10]) + (f" and {len(hit) - 10} more" if len(hit) > 10 else "")
    return [f"- {len(hit)} source{'s' if len(hit) != 1 else ''} had decode errors ({total} corrupt frames or "
            f"packets skipped): {names}"]


def require_outputs(out: str | Path) -> None:
    """FileNotFoundError unless OUT holds the parquet files of a run (checked before OUT is touched)."""
    out = Path(out)
    for name in ("sources.parquet", "clips.parquet"):
        if not (out / name).is_file():
            raise FileNotFoundError(f"{path_text(str(out / name))} not found (is {path_text(str(out))} the output "
                                    "of `vfm-curate run`?)")


def _read_table(path: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # a file object: any file name, even one not UTF-8; ParquetFile, not read_table, whose dataset
        # layer imports pandas (0.2 s of every run's report)
        with open_regular(path, "parquet file") as f:
            return pq.ParquetFile(f).read().to_pydict()
    except (pa.ArrowException, OSError) as exc:
        raise CurateError(f"cannot read {path_text(str(path))}: {' '.join(str(exc).split())[:200]}") from None


def write_report(out: str | Path) -> Path:
    """(Re)write OUT/report.md and its PNGs from sources.parquet and clips.parquet."""
    out = Path(out)
    require_outputs(out)
    sources, clips = (_read_table(out / name) for name in ("sources.parquet", "clips.parquet"))
    stats = {}
    if (out / "_state" / "run.json").is_file():
        try:
            stats = json.loads(read_regular(out / "_state" / "run.json", "run record", 1 << 20))
        except (OSError, ValueError):
            stats = {}  # the figures of the last run are lost; the rest of the report stands
        if not isinstance(stats, dict):
            stats = {}

    n_src = len(sources["source"])
    by_status = {s: sum(1 for v in sources["status"] if v == s) for s in ("done", "failed", "skipped")}
    n_clips = len(clips["clip_id"])
    kept_ids = [cid for cid, s in zip(clips["clip_id"], clips["status"]) if s == "kept"]
    reasons: dict[str, int] = {}
    for r in clips["reject_reason"]:
        if r:
            reasons[_reason_group(r)] = reasons.get(_reason_group(r), 0) + 1
    order = [r.split(":")[0] for r in REJECT_REASONS]
    order += sorted(r for r in reasons if r not in order)
    funnel = [("candidates", n_clips)]
    remaining = n_clips
    for r in order:
        if reasons.get(r):
            remaining -= reasons[r]
            funnel.append((f"- {r}", remaining))
    funnel.append(("kept", len(kept_ids)))

    # The contact sheet is built (and, for a run without saved thumbnails, its frames decoded: PyAV and
    # PIL release the GIL) while the charts are drawn.
    with ThreadPoolExecutor(max_workers=1) as pool:
        sheet = pool.submit(_contact_sheet, out, kept_ids, out / "contact_sheet.png",
                            dict(zip(clips["clip_id"], clips["source"])))
        _histograms(clips, out / "scores.png", _thresholds(out))
        _save(funnel_png(funnel), out / "funnel.png")
        n_thumbs = sheet.result()

    video_s = sum(d or 0.0 for d in sources["duration_s"])
    kept_s = sum(e - s for e, s, st in zip(clips["end_s"], clips["start_s"], clips["status"]) if st == "kept")
    lines = [
        f"# Curation report: {path_text(out.name)}", "",
        "## Inputs", "",
        f"- sources: {n_src} (done {by_status['done']}, failed {by_status['failed']}, "
        f"skipped {by_status['skipped']})",
        f"- video: {video_s:.1f} s in, {kept_s:.1f} s kept in {len(kept_ids)} clips",
        *_decode_error_lines(sources), "",
        "| source | status | reason | duration s | frames | clips | kept |", "|---|---|---|---|---|---|---|",
    ]
    for i in range(n_src):
        dur = sources["duration_s"][i]
        lines.append(f"| {sources['source'][i]} | {sources['status'][i]} | {sources['reason'][i] or ''} | "
                     f"{'' if dur is None else f'{dur:.2f}'} | {sources['num_frames'][i] or ''} | "
                     f"{sources['num_clips'][i]} | {sources['num_kept'][i]} |")
    lines += ["", "## Clips", "", f"- candidates: {n_clips}, kept: {len(kept_ids)}, "
              f"rejected: {n_clips - len(kept_ids)}", "", "| reject reason | clips |", "|---|---|"]
    for r in order:
        if reasons.get(r):
            lines.append(f"| {r} | {reasons[r]} |")
    lines += ["", "![rejection funnel](funnel.png)", "", "## Scores", "",
              "Histograms of every scored candidate (green kept, red rejected; dashed: the thresholds):", "", "![scores](scores.png)",
              "", "## Kept clips", "", f"Middle frames of the first {n_thumbs} kept clips:", "",
              "![contact sheet](contact_sheet.png)", ""]
    if stats:
        wall = stats.get("wall_s") or 0.0
        lines += ["## Throughput", "",
                  f"- wall time of the last run: {wall:.1f} s with {stats.get('workers')} workers "
                  f"({stats.get('executor')})",
                  f"- sources processed in the last run: {stats.get('processed')}, resumed from earlier runs: "
                  f"{stats.get('resumed')}",
                  f"- video hours per wall hour: {stats.get('video_h_per_wall_h', 0.0):.1f}", ""]
        stage_s = dict(stats.get("stage_seconds") or [])  # in pipeline order
        total = sum(stage_s.values())
        if total > 0:
            lines += ["| stage | worker seconds | share |", "|---|---|---|"]
            lines += [f"| {n} | {v:.2f} | {100 * v / total:.0f}% |" for n, v in stage_s.items()]
            lines.append("")
    path = out / "report.md"
    with writing(path):
        atomic_write_text(path, "\n".join(lines))
    return path
