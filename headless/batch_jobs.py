"""The job table of a batch run: one job per line of a prompts file, per image of a folder, or per row of a CSV.

A job is a name (its output folder), the overrides it applies to the workflow and, for image jobs, the folder its
image is read from. Nothing here imports Ray: the table is plain data the driver ships to the workers."""
from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .evaluate_uni3d import slug
from .pack import load_pack
from .validation import apply_overrides, parse_overrides
from .workflow import WorkflowError

GeoDreamError = load_pack().geodream_ops.errors.GeoDreamError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
# Columns of a CSV job table that are not NodeType.input overrides.
NAME, PROMPT, IMAGE = "name", "prompt", "image"


@dataclass
class Job:
    """One asset to make. ``overrides`` maps node type -> {input: value} (as ``--set`` does); ``prompt`` goes into
    every node's "prompt" widget; ``image`` is a file name in ``input_dir`` for the workflow's LoadImage."""
    name: str
    prompt: str | None = None
    image: str | None = None
    input_dir: str | None = None
    overrides: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def signature(self, workflow_text: str) -> str:
        """Same workflow and job -> same signature: a finished job with it is not run again."""
        payload = json.dumps([workflow_text, self.prompt, self.image, self.input_dir, self.overrides], sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:16]

    def apply(self, api: dict, node_classes: dict) -> dict:
        """The API-format workflow with this job's prompt, image and overrides written in (a new dict). A prompt
        with no prompt text widget to go to, an image with no LoadImage, or an override matching no node or input
        of the workflow (validation.apply_overrides) is a WorkflowError naming the job."""
        api = json.loads(json.dumps(api))
        took_prompt = took_image = False
        for node in api.values():
            inputs = node["inputs"]
            if self.prompt is not None and isinstance(inputs.get(PROMPT), str):
                inputs[PROMPT], took_prompt = self.prompt, True
            if self.image is not None and node["class_type"] == "LoadImage":
                inputs[IMAGE], took_image = self.image, True
        if self.prompt is not None and not took_prompt:
            raise WorkflowError(f"job {self.name}: the job table gives a prompt, but no node of the workflow has a "
                                "prompt text widget (a linked prompt is not replaced)")
        if self.image is not None and not took_image:
            raise WorkflowError(f"job {self.name}: the job table gives an image, but the workflow has no LoadImage")
        return apply_overrides(api, self.overrides, node_classes, source=f"job {self.name}, column")


def _named(jobs: list[Job]) -> list[Job]:
    """Folder names: the row number keeps them unique and in table order, the words make them readable."""
    for number, job in enumerate(jobs, 1):
        words = job.name or slug(job.prompt or "") or slug(Path(job.image or "").stem) or "job"
        job.name = f"{number:03d}_{words[:48]}"
    return jobs


def from_prompts(path: Path) -> list[Job]:
    """One job per non-empty line (a line 'NAME<TAB>prompt' names its job, as evaluate_uni3d reads it)."""
    jobs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        name, tab, prompt = line.partition("\t")
        prompt = (prompt if tab else name).strip()
        if prompt:
            jobs.append(Job(name=slug(name) if tab else "", prompt=prompt))
    return _named(jobs)


def from_images(folder: Path) -> list[Job]:
    """One job per image file of the folder, in name order."""
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return _named([Job(name="", image=p.name, input_dir=str(folder.resolve())) for p in images])


def decode_table(data: bytes) -> str:
    """A CSV's text as spreadsheet programs save it: UTF-8 with or without Excel's byte-order mark, UTF-16 (Excel's
    "Unicode text"), else the Windows code page Excel uses for "CSV" in Western locales (cp1252, whose bytes
    0x80-0x9F are curly quotes and dashes), else Latin-1."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1")


def read_table(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, {column: cell}) per non-empty row of a CSV, read as a spreadsheet shows it: any encoding of
    decode_table; ',' ';' or tab between cells (European Excel writes ';'); header cells trimmed, and name / prompt
    / image matched whatever their case; columns with neither a header nor a value (trailing separators) dropped."""
    text = decode_table(path.read_bytes())
    header_line = next((line for line in text.splitlines() if line.strip()), "")
    try:
        dialect = csv.Sniffer().sniff(header_line, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    lines = [(reader.line_num, row) for row in reader]
    lines = [(number, row) for number, row in lines if any(cell.strip() for cell in row)]
    if not lines:
        return []
    header = [cell.strip() for cell in lines[0][1]]
    header = [h.lower() if h.lower() in (NAME, PROMPT, IMAGE) else h for h in header]
    duplicates = sorted({h for h in header if h and header.count(h) > 1})
    if duplicates:
        raise GeoDreamError(f"{path}: the column{'s' if len(duplicates) > 1 else ''} {', '.join(duplicates)} "
                            "appear more than once in the header; keep one of each.")
    rows = []
    for number, cells in lines[1:]:
        if len(cells) > len(header) and any(c.strip() for c in cells[len(header):]):
            raise GeoDreamError(f"{path} line {number}: {len(cells)} cells under a header of {len(header)} columns; "
                                "give every column a header (or quote cells holding the separator).")
        row = {h: c.strip() for h, c in zip(header, cells)}
        if "" in row and row[""]:
            raise GeoDreamError(f"{path} line {number}: a value under a column without a header; name the column.")
        row.pop("", None)
        rows.append((number, row))
    return rows


def from_csv(path: Path) -> list[Job]:
    """One job per row. Columns: optional 'name', 'prompt', 'image' (a path, relative to the CSV's folder), and any
    'NodeType.input' column, whose cells override that input (JSON values, else text; an empty cell leaves it).
    Encodings, separators and header quirks as read_table reads them."""
    jobs = []
    for number, row in read_table(path):
        settings = [f"{k}={v}" for k, v in row.items() if k not in (NAME, PROMPT, IMAGE) and v != ""]
        try:
            overrides = parse_overrides(settings)
        except WorkflowError as exc:
            raise GeoDreamError(f"{path} line {number}: {exc}. Columns other than name, prompt and image must "
                                "be NodeType.input, e.g. GeoDreamVSDRefineNeuS.seed.") from None
        job = Job(name=slug(row.get(NAME, "")), prompt=row[PROMPT] if PROMPT in row else None, overrides=overrides)
        if row.get(IMAGE):
            image = (path.parent / row[IMAGE]).resolve()
            job.image, job.input_dir = image.name, str(image.parent)
        jobs.append(job)
    return _named(jobs)


def read_jobs(source) -> list[Job]:
    """The job table from a prompts file (.txt), a CSV (.csv) or a folder of images."""
    source = Path(source)
    if source.is_dir():
        jobs = from_images(source)
    elif source.is_file():
        jobs = from_csv(source) if source.suffix.lower() == ".csv" else from_prompts(source)
    else:
        raise GeoDreamError(f"the job table {source} does not exist: give a prompts file (one prompt a line), "
                            "a CSV of per-job settings, or a folder of images.")
    if not jobs:
        raise GeoDreamError(f"the job table {source} holds no jobs (no prompt lines, rows or image files).")
    return jobs
