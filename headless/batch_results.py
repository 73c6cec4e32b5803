"""A batch's results: results.json (one object per job, nested), results.csv (the same, one flat row per job, a
column per stage's seconds) and contact_sheet.png (every job's turntable strip, captioned). Written atomically
after every finished job, so an interrupted batch still leaves an up-to-date table."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .batch_job import DONE, write_text
from .pack import load_pack

PENDING = "pending"
SHEET = "contact_sheet.png"
CAPTION_HEIGHT = 18


def row(job, result: dict | None) -> dict:
    """One job's inputs and result: status, error, attempts, output files, seconds per stage, Uni3D score."""
    result = result or {"status": PENDING}
    return {"job": job.name, "prompt": job.prompt, "image": job.image, "overrides": job.overrides,
            "status": result["status"], "error": result.get("error", ""), "attempts": result.get("attempt"),
            "uni3d_score": result.get("uni3d_score"), "files": result.get("files", []),
            "seconds": result.get("seconds", {}), "turntable": result.get("turntable")}


def _flat(entry: dict, stages: list[str]) -> dict:
    flat = {k: v for k, v in entry.items() if k not in ("overrides", "files", "seconds")}
    flat["overrides"] = json.dumps(entry["overrides"]) if entry["overrides"] else ""
    flat["files"] = " ".join(entry["files"])
    flat.update({f"seconds.{stage}": entry["seconds"].get(stage, "") for stage in stages})
    return flat


def write(out: Path, jobs: list, results: dict) -> list[dict]:
    """results.json and results.csv for ``jobs`` (in table order) from ``results`` ({job name: result})."""
    rows = [row(job, results.get(job.name)) for job in jobs]
    stages = list(dict.fromkeys(stage for entry in rows for stage in entry["seconds"]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(_flat(rows[0], stages)))
    writer.writeheader()
    writer.writerows(_flat(entry, stages) for entry in rows)
    Path(out).mkdir(parents=True, exist_ok=True)
    write_text(Path(out) / "results.csv", buffer.getvalue())
    write_text(Path(out) / "results.json", json.dumps(rows, indent=2))
    return rows


def contact_sheet(out: Path, rows: list[dict], width: int = 768) -> Path | None:
    """One image of every finished job's turntable strip, scaled to ``width`` and captioned with the job's name."""
    from PIL import Image, ImageDraw

    strips = [(entry["job"], Image.open(entry["turntable"]).convert("RGB")) for entry in rows
              if entry["status"] == DONE and entry["turntable"] and Path(entry["turntable"]).exists()]
    if not strips:
        return None
    scaled = [(name, strip.resize((width, max(1, round(strip.height * width / strip.width))))) for name, strip in strips]
    sheet = Image.new("RGB", (width, sum(s.height + CAPTION_HEIGHT for _, s in scaled)), "white")
    draw, y = ImageDraw.Draw(sheet), 0
    for name, strip in scaled:
        draw.text((4, y + 3), name, fill="black")
        sheet.paste(strip, (0, y + CAPTION_HEIGHT))
        y += strip.height + CAPTION_HEIGHT
    path = Path(out) / SHEET
    with load_pack().geodream_ops.atomic.atomic_write(path) as tmp:
        sheet.save(tmp)
    return path
