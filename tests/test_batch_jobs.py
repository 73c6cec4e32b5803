"""The batch job table (headless.batch_jobs), without Ray: prompts files, image folders and CSVs of overrides become
jobs with stable, unique folder names, and a job writes its prompt, image and overrides into the workflow."""
import pytest

from headless.batch_jobs import GeoDreamError, Job, read_jobs
from headless.installed import node_classes

API = {"1": {"class_type": "GeoDreamMultiViewGenerate", "inputs": {"prompt": "old", "seed": 0, "mv_model": ["2", 0]}},
       "2": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
       "3": {"class_type": "GeoDreamVSDRefineNeuS", "inputs": {"prompt": ["9", 0], "seed": 0, "steps": 10}}}


def test_prompts_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a ceramic owl\n\n  \nowl2\ta second owl\na red apple!\n", encoding="utf-8")
    jobs = read_jobs(path)
    assert [(j.name, j.prompt) for j in jobs] == [("001_a_ceramic_owl", "a ceramic owl"),
                                                  ("002_owl2", "a second owl"), ("003_a_red_apple", "a red apple!")]


def test_image_folder(tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    jobs = read_jobs(tmp_path)
    assert [(j.name, j.image, j.input_dir) for j in jobs] == [("001_a", "a.JPG", str(tmp_path)),
                                                              ("002_b", "b.png", str(tmp_path))]


def test_csv_overrides(tmp_path):
    (tmp_path / "img").mkdir()
    path = tmp_path / "jobs.csv"
    path.write_text("name,prompt,image,GeoDreamVSDRefineNeuS.seed,GeoDreamVSDRefineNeuS.steps\n"
                    "first,a teapot,,7,\n"
                    ",a cup,img/cup.png,8,20\n", encoding="utf-8")
    first, second = read_jobs(path)
    assert (first.name, first.prompt, first.image, first.overrides) == (
        "001_first", "a teapot", None, {"GeoDreamVSDRefineNeuS": {"seed": 7}})
    assert (second.name, second.image, second.input_dir) == ("002_a_cup", "cup.png", str(tmp_path / "img"))
    assert second.overrides == {"GeoDreamVSDRefineNeuS": {"seed": 8, "steps": 20}}
    api = second.apply(API, node_classes())
    assert api["1"]["inputs"] == {"prompt": "a cup", "seed": 0, "mv_model": ["2", 0]}
    assert api["2"]["inputs"] == {"image": "cup.png"}
    assert api["3"]["inputs"] == {"prompt": ["9", 0], "seed": 8, "steps": 20}  # a linked prompt stays linked
    assert API["3"]["inputs"]["seed"] == 0  # the workflow itself is untouched


def test_signature_follows_workflow_and_settings():
    job = Job(name="001_x", prompt="a cup", overrides={"A": {"seed": 1}})
    same = Job(name="001_x", prompt="a cup", overrides={"A": {"seed": 1}})
    assert job.signature("wf") == same.signature("wf")
    assert job.signature("wf") != job.signature("wf2")
    assert job.signature("wf") != Job(name="001_x", prompt="a cup", overrides={"A": {"seed": 2}}).signature("wf")


@pytest.mark.parametrize("content, message", [(None, "does not exist"), ("\n\n", "holds no jobs"),
                                               ("prompt,seed\na,1\n", "line 2")])
def test_bad_tables(tmp_path, content, message):
    path = tmp_path / ("jobs.csv" if content and "," in content else "prompts.txt")
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(GeoDreamError, match=message):
        read_jobs(path)


ROWS = [("first", "a café – “owl”", "7"), ("", "a cup, red\nand tall", "8")]


def _expected(jobs):
    assert [(j.name, j.prompt, j.overrides) for j in jobs] == [
        ("001_first", "a café – “owl”", {"GeoDreamVSDRefineNeuS": {"seed": 7}}),
        ("002_a_cup_red_and_tall", "a cup, red\nand tall", {"GeoDreamVSDRefineNeuS": {"seed": 8}})]


def _table(separator, header=("name", "prompt", "GeoDreamVSDRefineNeuS.seed"), trailing=""):
    lines = [separator.join(header) + trailing]
    for name, prompt, seed in ROWS:
        lines.append(separator.join([name, '"' + prompt + '"', seed]) + trailing)
    return "\r\n".join(lines) + "\r\n\r\n"  # Excel's CRLF, and a blank line at the end


@pytest.mark.parametrize("encoding, separator", [
    ("utf-8-sig", ","),  # Excel's "CSV UTF-8": a byte-order mark before the header
    ("utf-16", "\t"),  # Excel's "Unicode text": UTF-16 with a BOM, tab separated
    ("cp1252", ";"),  # Excel's plain "CSV" in a European locale: Windows code page, semicolons
    ("utf-8", ","),
])
def test_csv_as_spreadsheet_programs_save_it(tmp_path, encoding, separator):
    path = tmp_path / "jobs.csv"
    path.write_bytes(_table(separator).encode(encoding))
    _expected(read_jobs(path))


def test_csv_header_quirks(tmp_path):
    """Capitalised and padded headers, and the empty trailing columns a spreadsheet leaves, are read as meant."""
    path = tmp_path / "jobs.csv"
    path.write_text(_table(",", header=(" Name", "PROMPT ", " GeoDreamVSDRefineNeuS.seed "), trailing=",,"),
                    encoding="utf-8")
    _expected(read_jobs(path))
    path.write_text("prompt,prompt\na,b\n", encoding="utf-8")
    with pytest.raises(GeoDreamError, match="prompt appear more than once"):
        read_jobs(path)
    path.write_text("prompt,\na,b\n", encoding="utf-8")
    with pytest.raises(GeoDreamError, match="line 2: a value under a column without a header"):
        read_jobs(path)
    path.write_text("prompt\na,b\n", encoding="utf-8")
    with pytest.raises(GeoDreamError, match="line 2: 2 cells under a header of 1 columns"):
        read_jobs(path)
