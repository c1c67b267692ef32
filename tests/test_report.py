"""The HTML evaluation report (`afsd evaluate --report/--compare`, evaluation/report.py).

The page is checked as data (its numbers are those of `--output`) and, when Debian's
`chromium` is installed, as a person would see it: rendered headless, with no console message,
no request leaving the page, every video and class in the rendered text, and a screenshot that
is not blank.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from afsd_cli.cli import app
from afsd_cli.evaluation import evaluate_detections, ground_truth_from_dict, load_ground_truth
from afsd_cli.evaluation.breakdown import diagnose
from afsd_cli.evaluation.detections import detections_from_dict
from afsd_cli.evaluation.report import MAX_DRAWN_PER_VIDEO, PR_RECALL_POINTS, ReportRun, report_data, write_report

DATA = Path(__file__).parent / "data" / "evaluation"
EDGE_GT, EDGE_DETECTIONS = DATA / "edge_gt.json", DATA / "edge_detections.json"
THUMOS_CSV = DATA / "thumos14_test_Annotation.csv"
DEMO = Path(__file__).parent / "data" / "report"  # ground truth and detections of a `make demo --quick` run
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium): headless rendering not checked"
)
runner = CliRunner()


def embedded_data(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    match = re.search(r'<script id="report-data" type="application/json">(.*?)</script>', text, re.S)
    assert match, "no embedded report data"
    return json.loads(match.group(1))


def evaluate_cli(*args: str):
    return runner.invoke(app, ["evaluate", *map(str, args)])


# ---------------------------------------------------------------- the page as data


def test_report_numbers_equal_the_metrics_json_in_the_run_folder(tmp_path):
    result = evaluate_cli(EDGE_DETECTIONS, "--gt", EDGE_GT, "--subset", "test", "--tiou", "0.3,0.5,0.7",
                          "--runs-dir", tmp_path / "runs", "--name", "e")
    assert result.exit_code == 0, result.output
    page = tmp_path / "runs" / "e" / "report.html"  # default: in the evaluate run folder
    assert f"report written to {page}" in result.output.replace("\n", "")
    data = embedded_data(page)
    metrics = json.loads((tmp_path / "runs" / "e" / "metrics.json").read_text())
    assert data["runs"][0]["metrics"] == metrics
    assert data["thresholds"] == metrics["tiou_thresholds"]
    assert data["classes"] == ["X", "Y", "Z"] and [v["name"] for v in data["videos"]] == ["vA", "vB"]
    assert data["runs"][0]["read"] == 20


def test_report_option_writes_where_asked(tmp_path):
    result = evaluate_cli(EDGE_DETECTIONS, "--gt", EDGE_GT, "--subset", "test", "--output", tmp_path / "m.json",
                          "--report", tmp_path / "elsewhere" / "page.html")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "elsewhere" / "page.html").is_file() and not (tmp_path / "report.html").exists()


def test_output_alone_writes_exactly_that_file(tmp_path):
    result = evaluate_cli(EDGE_DETECTIONS, "--gt", EDGE_GT, "--subset", "test", "--output", tmp_path / "m.json")
    assert result.exit_code == 0 and "report written" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_compare_two_detection_files(tmp_path):
    better = json.loads(EDGE_DETECTIONS.read_text())
    better["results"]["vB"].append({"segment": [0, 4], "score": 0.99, "label": "Z"})  # finds Z: its AP rises
    other = tmp_path / "better.json"
    other.write_text(json.dumps(better))
    page = tmp_path / "compare.html"
    result = evaluate_cli("--compare", EDGE_DETECTIONS, other, "--gt", EDGE_GT, "--subset", "test",
                          "--tiou", "0.5", "--report", page)
    assert result.exit_code == 0, result.output
    assert "Δ" in result.output and "+33.33" in result.output  # Z: AP 0 -> 1, mAP over 3 classes
    data = embedded_data(page)
    assert [run["name"] for run in data["runs"]] == ["edge_detections", "better"]
    before, after = (run["metrics"]["per_class_ap"]["Z"][0] for run in data["runs"])
    assert (before, after) == (0.0, 1.0)


def test_compare_names_the_ground_truth_once(tmp_path):
    """The ground truth is read once: its lines (and the skipped 'Ambiguous' rows) appear once,
    each detections file's line once per file."""
    detections = tmp_path / "few.json"
    detections.write_text(json.dumps({"version": "THUMOS14", "results": {
        "video_test_0000004": [{"segment": [0.5, 2.0], "score": 0.9, "label": "CricketBowling"}]}}))
    result = evaluate_cli("--compare", detections, detections, "--gt", THUMOS_CSV, "--report", tmp_path / "c.html")
    assert result.exit_code == 0, result.output
    assert result.output.count("'Ambiguous' rows") == 1
    assert result.output.count("ground truth") == 1
    assert result.output.count("detections ") >= 2


def test_compare_with_output_needs_a_report_path(tmp_path):
    result = evaluate_cli("--compare", EDGE_DETECTIONS, EDGE_DETECTIONS, "--gt", EDGE_GT, "--subset", "test",
                          "--output", tmp_path / "m.json")
    assert result.exit_code == 1 and not (tmp_path / "m.json").exists()
    assert "--report" in result.output and "Traceback" not in result.output


def test_compare_writes_its_page_into_the_run_folder(tmp_path):
    result = evaluate_cli("--compare", EDGE_DETECTIONS, EDGE_DETECTIONS, "--gt", EDGE_GT, "--subset", "test",
                          "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert len(embedded_data(tmp_path / "runs" / "exp" / "report.html")["runs"]) == 2


def test_run_folder_config_and_versions_are_shown(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(EDGE_DETECTIONS, run / "detections.json")
    (run / "config.yaml").write_text("dataset:\n  num_classes: 3\n")
    (run / "env.json").write_text(json.dumps({"torch": "2.13.0", "command": "afsd predict"}))
    result = evaluate_cli(run / "detections.json", "--gt", EDGE_GT, "--subset", "test", "--report", tmp_path / "r.html")
    assert result.exit_code == 0, result.output
    info = embedded_data(tmp_path / "r.html")["runs"][0]["info"]
    assert info == {"config": "dataset:\n  num_classes: 3\n", "env": json.dumps({"torch": "2.13.0", "command": "afsd predict"})}


def edge_report():
    ground_truth = load_ground_truth(EDGE_GT, "test")
    detections = detections_from_dict(json.loads(EDGE_DETECTIONS.read_text()))
    result = evaluate_detections(ground_truth, detections, [0.3, 0.5, 0.7])
    return ground_truth, detections, result, report_data(ground_truth, [ReportRun("edge", detections, result)])


def test_timelines_hold_every_evaluated_detection_by_score():
    ground_truth, detections, result, data = edge_report()
    run = data["runs"][0]
    diagnosis = diagnose(ground_truth, detections, result)
    rows = [np.array(r, dtype=object).reshape(-1, 7) for r in run["detections"]]
    assert sum(len(r) for r in rows) + sum(run["omitted"]) == result.num_predictions
    for video, r in enumerate(rows):
        assert list(r[:, 3]) == sorted(r[:, 3], reverse=True)  # best score first
        gt = data["videos"][video]["gt"]
        for label, start, end, score, tiou, best, codes in r:
            assert len(codes) == 3 and 0 <= label < 3
            assert best == -1 or 0 <= best < len(gt)
    # one digit per threshold: the breakdown's codes, detection by detection
    in_page = sorted(code for r in rows for code in r[:, 6])
    assert in_page and sorted(
        "".join(str(c) for c in diagnosis.codes[:, k]) for k in range(diagnosis.codes.shape[1])
    ) == in_page
    # matched bit masks agree with the breakdown's matched instances
    bits = [b for video in run["matched"] for b in video]
    assert sum(bin(b).count("1") for b in bits) == int(diagnosis.gt_matched.sum())


def test_pr_curves_enclose_the_ap():
    _, _, result, data = edge_report()
    pr = data["runs"][0]["pr"]
    for t in range(3):
        for c in range(3):
            curve = np.array(pr[t][c])
            assert curve.shape == PR_RECALL_POINTS.shape and (np.diff(curve) <= 1e-12).all()  # interpolated
            # sampled every 0.02 of recall, the area is the AP to within the sampling step
            assert np.trapezoid(curve, PR_RECALL_POINTS) == pytest.approx(result.ap[t, c], abs=0.03)


def one_video_page(tmp_path: Path, video: str, label: str) -> Path:
    """The report of one video with one action and one detection of ``label`` (names under test)."""
    gt = {"database": {video: {"subset": "test", "annotations": [{"segment": [1, 5], "label": label}]}}}
    det = {"results": {video: [{"segment": [1, 4], "score": 0.9, "label": label}]}}
    ground_truth = ground_truth_from_dict(gt, "test", "anet")
    detections = detections_from_dict(det)
    result = evaluate_detections(ground_truth, detections, [0.5])
    return write_report(tmp_path / "r.html", ground_truth, [ReportRun("x", detections, result)])


def test_names_cannot_break_out_of_the_page(tmp_path):
    # A video name is one plain file name (afsd_cli/names.py refuses '/'), a label may hold anything.
    video, label = "<img src=x onerror=alert(1)>", "</script><b>A & \"B\"</b>\u2028"
    page = one_video_page(tmp_path, video, label)
    text = page.read_text(encoding="utf-8")
    assert text.count("</script>") == 3  # the error recorder, the data, the page's script
    assert "<img" not in text and "<b>" not in text
    data = embedded_data(page)
    assert data["videos"][0]["name"] == video and data["classes"] == [label]


def test_page_is_self_contained(tmp_path):
    _, _, _, data = edge_report()
    page = tmp_path / "r.html"
    from afsd_cli.evaluation.report import render_report

    page.write_text(render_report(data), encoding="utf-8")
    text = page.read_text(encoding="utf-8")
    assert "default-src 'none'" in text  # a request of any kind would be refused (and recorded)
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", text))
    assert urls == {"http://www.w3.org/2000/svg"}  # a namespace name, never fetched
    assert not re.search(r"\s(src|href)\s*=\s*(?![\"']?#)", text)  # only in-page anchors


def thumos14_sized(ground_truth, n=50_000, seed=0):
    """Detections of the size AFSD writes for the THUMOS14 test set (benchmarks/bench_report.py's)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_report import synthetic_detections

    return synthetic_detections(ground_truth, n, seed)


@pytest.fixture(scope="module")
def thumos14_compare_page(tmp_path_factory):
    """Two THUMOS14-sized detection sets (212 videos, ~50k detections each) side by side."""
    ground_truth = load_ground_truth(THUMOS_CSV)
    runs = []
    for seed, name in ((0, "A"), (1, "B")):
        detections = detections_from_dict(thumos14_sized(ground_truth, seed=seed))
        runs.append(ReportRun(name, detections, evaluate_detections(ground_truth, detections)))
    page = write_report(tmp_path_factory.mktemp("report") / "thumos14.html", ground_truth, runs)
    return ground_truth, runs, page


def test_thumos14_sized_comparison_stays_a_few_megabytes(thumos14_compare_page):
    ground_truth, runs, page = thumos14_compare_page
    assert all(len(run.detections) > 49_000 for run in runs)
    assert page.stat().st_size < 5_000_000
    data = embedded_data(page)
    assert len(data["videos"]) == len(ground_truth.videos) == 212
    for run, embedded in zip(runs, data["runs"]):
        assert embedded["metrics"]["average_mAP"] == run.result.average_mAP
        drawn = sum(len(r) // 7 for r in embedded["detections"])
        assert drawn + sum(embedded["omitted"]) == run.result.num_predictions
        assert max(len(r) // 7 for r in embedded["detections"]) <= MAX_DRAWN_PER_VIDEO


# ---------------------------------------------------------------- the page in a browser


def chromium(page: Path, profile: Path, *args: str, anchor: str = "") -> subprocess.CompletedProcess:
    """Headless Chromium on ``page``: nothing resolves (no network), console messages to stderr."""
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
        "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=8000", "--enable-logging=stderr", "--v=0",
        f"--user-data-dir={profile}", *args, page.as_uri() + anchor,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def rendered(page: Path, tmp_path: Path, height: int = 2000) -> tuple[str, str]:
    """The DOM after the page's script ran, and what the browser logged."""
    run = chromium(page, tmp_path / "profile", "--dump-dom", f"--window-size=1400,{height}")
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout, run.stderr


def visible_text(dom: str) -> str:
    body = dom[dom.index("<body"):]
    body = re.sub(r"<script.*?</script>", " ", body, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


def assert_clean_render(dom: str, log: str):
    assert 'data-ready="1"' in dom, "the page's script did not finish"
    errors = re.search(r'<html[^>]*\sdata-errors="([^"]*)"', dom)
    assert errors is None, html.unescape(errors.group(1))
    console = [line for line in log.splitlines() if "CONSOLE" in line]
    assert not console, console  # no error, no warning, no refused request


def screenshot_is_not_blank(page: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "shot.png"
    run = chromium(page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,1600")
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1600, 1400)
    colours = np.unique(pixels.reshape(-1, 3)[::7], axis=0)
    assert len(colours) > 50 and (pixels < 128).any(axis=2).mean() > 0.005  # text and charts, not a blank page


@needs_chromium
def test_demo_report_renders_in_headless_chromium(tmp_path):
    """The demo's own detections (fused against RGB, from `python -m afsd_cli.demo --quick`)."""
    page = tmp_path / "demo.html"
    run = tmp_path / "fused"  # a run folder: the config and versions are shown
    run.mkdir()
    shutil.copy(DEMO / "demo_fused.json", run / "demo_fused.json")
    (run / "config.yaml").write_text("model:\n  num_classes: 5\n")
    (run / "env.json").write_text('{"torch": "2.13.0"}')
    result = evaluate_cli(run / "demo_fused.json", "--compare", DEMO / "demo_rgb.json", "--gt", DEMO / "demo_gt.json",
                          "--dataset", "thumos14", "--output", tmp_path / "m.json", "--report", page)
    assert result.exit_code == 0, result.output
    dom, log = rendered(page, tmp_path, height=5000)
    assert_clean_render(dom, log)
    text = visible_text(dom)
    data = embedded_data(page)
    for name in [v["name"] for v in data["videos"]] + data["classes"] + ["demo_fused", "demo_rgb", "num_classes: 5"]:
        assert name in text, name
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert f"{100 * metrics['average_mAP']:.2f}" in text
    assert len(re.findall(r'<clipPath id="clip\d+"', dom)) == len(data["videos"])  # every timeline drawn
    screenshot_is_not_blank(page, tmp_path)


@needs_chromium
def test_hostile_names_render_as_text(tmp_path):
    video, label = "<img src=x onerror=alert(1)>", "</script><b>bold?</b>"
    page = one_video_page(tmp_path, video, label)
    dom, log = rendered(page, tmp_path)
    assert_clean_render(dom, log)
    assert "<img" not in dom and "<b>" not in dom
    assert video in visible_text(dom) and label in visible_text(dom)


@needs_chromium
def test_thumos14_sized_comparison_renders(thumos14_compare_page, tmp_path):
    ground_truth, runs, page = thumos14_compare_page
    dom, log = rendered(page, tmp_path, height=6000)
    assert_clean_render(dom, log)
    text = visible_text(dom)
    missing = [v for v in ground_truth.videos if v not in text] + [c for c in ground_truth.class_names if c not in text]
    assert not missing
    for run in runs:
        assert f"{100 * run.result.average_mAP:.2f}" in text
    # timelines are drawn lazily: those in the window are, the rest wait as placeholders
    drawn = len(re.findall(r'<clipPath id="clip\d+"', dom))
    assert 0 < drawn < len(ground_truth.videos)
    screenshot_is_not_blank(page, tmp_path)


def test_demo_writes_and_names_a_report_for_every_stream():
    from afsd_cli import demo

    args = demo.parse_args(["--out", "/tmp/afsd-demo-test"])
    args.epochs = 1
    layout = demo.DemoLayout(args.out)
    stages = {s.name: s.argv for s in demo.build_stages(layout, args)}
    for stream in demo.STREAMS:
        argv = stages[f"evaluate {stream}"]
        assert argv[argv.index("--report") + 1] == str(layout.report(stream))
    assert layout.report("fused") == Path("/tmp/afsd-demo-test/reports/fused.html")


@needs_chromium
def test_a_person_can_use_the_page(tmp_path):
    """Driven through the DevTools protocol: hover, slider, zoom, sorting; no console message
    and no request other than the page itself."""
    from helpers.devtools import Browser

    page = tmp_path / "demo.html"
    result = evaluate_cli(DEMO / "demo_fused.json", "--gt", DEMO / "demo_gt.json", "--dataset", "thumos14",
                          "--report", page)
    assert result.exit_code == 0, result.output
    with Browser(CHROMIUM, tmp_path / "profile", height=900) as browser:
        browser.open(page.as_uri())
        browser.evaluate("document.getElementById('timelines').scrollIntoView()")
        browser.wait_for("document.querySelector('#video-list svg rect[data-kind=detection]')")
        plot = "document.querySelector('#video-list .video svg')"
        detections = f"{plot}.querySelectorAll('rect[data-kind=detection]').length"
        shown = browser.evaluate(detections)

        # hovering the best-scored detection (drawn last, on top) names its class, score and tIoU
        box = browser.evaluate(f"(() => {{ const r = [...{plot}.querySelectorAll('rect[data-kind=detection]')].pop()"
                               ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height - 2]; })()")
        browser.mouse("mouseMoved", *box)
        tip = browser.evaluate("document.getElementById('tooltip').textContent")
        assert re.search(r"(Bounce|Spin|Grow|Slide)\s+score 0\.\d{3}", tip) and "tIoU" in tip, tip
        assert browser.evaluate("getComputedStyle(document.getElementById('tooltip')).display") == "block"

        # the score slider hides low scores in the drawn timeline and in the header counts
        browser.evaluate("(() => { const s = document.getElementById('score-slider'); s.value = 0.5;"
                         " s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')); })()")
        browser.wait_for(f"{plot} && {detections} < {shown}")
        assert "≥ 0.50" in browser.evaluate("document.querySelector('#video-list .video .head').textContent")

        # dragging over the timeline zooms into that stretch: the axis ends before the video does
        def last_tick():
            return browser.evaluate(f"Math.max(...[...{plot}.querySelectorAll('text')]"
                                    ".map(t => parseFloat(t.textContent)).filter(Number.isFinite))")
        before = last_tick()
        left, top, width = browser.evaluate(f"(() => {{ const r = {plot}.getBoundingClientRect(); return [r.x, r.y, r.width]; }})()")
        browser.mouse("mousePressed", left + 100, top + 40, "left", 1)
        browser.mouse("mouseMoved", left + 100 + width / 4, top + 40, "left")
        browser.mouse("mouseReleased", left + 100 + width / 4, top + 40, "left", 1)
        assert last_tick() < before / 2
        browser.click(left + 200, top + 40, clicks=2)  # double-click: back to the whole video
        assert last_tick() == before

        # a click on a column header sorts the per-class table
        def first_class():
            return browser.evaluate("document.querySelector('#class-ap tr:nth-child(2) td').textContent")
        def first_ap_header():  # the table is rebuilt on every sort
            return browser.evaluate("(() => { const r = document.querySelectorAll('#class-ap th')[1]"
                                    ".getBoundingClientRect(); return [r.x + 5, r.y + 5]; })()")
        browser.evaluate("document.getElementById('class-ap').scrollIntoView({block: 'center'})")
        browser.click(*first_ap_header())  # best AP first
        by_ap = first_class()
        browser.click(*first_ap_header())  # again: worst first
        assert browser.evaluate("document.querySelectorAll('#class-ap th')[1].className").endswith("sorted-asc")
        data = embedded_data(page)
        aps = data["runs"][0]["metrics"]["per_class_ap"]
        assert by_ap == max(aps, key=lambda c: (aps[c][0], -list(aps).index(c)))
        assert first_class() == min(aps, key=lambda c: (aps[c][0], list(aps).index(c)))

        assert browser.console_messages() == []
        assert set(browser.requested_urls()) <= {page.as_uri()}


def test_report_of_detections_that_all_were_dropped(tmp_path):
    ground_truth = load_ground_truth(EDGE_GT, "test")
    detections = detections_from_dict({"results": {"elsewhere": [{"segment": [1, 2], "score": 0.5, "label": "X"}]}})
    result = evaluate_detections(ground_truth, detections, [0.5])
    data = embedded_data(write_report(tmp_path / "r.html", ground_truth, [ReportRun("none", detections, result)]))
    run = data["runs"][0]
    assert run["metrics"]["num_predictions"] == 0 and run["metrics"]["dropped"]["unknown_video"] == 1
    assert run["detections"] == [[], []] and run["matched"] == [[0] * 6, [0] * 4]
    assert run["fn_missed"] == [data["length_total"]]  # every instance missed
    assert np.array(run["profile"]).sum() == 0


@needs_chromium
def test_detections_outside_their_video_are_counted_by_name(tmp_path):
    gt = {"database": {"v": {"subset": "test", "duration": 10.0,
                             "annotations": [{"segment": [1, 5], "label": "Run"}]}}}
    det = {"results": {"v": [{"segment": [-1, 4], "score": 0.9, "label": "Run"},
                             {"segment": [6, 12], "score": 0.8, "label": "Run"},
                             {"segment": [8, 7], "score": 0.7, "label": "Run"},
                             {"segment": [9, 8], "score": 0.6, "label": "Run"}]}}
    ground_truth = ground_truth_from_dict(gt, "test", "anet")
    detections = detections_from_dict(det)
    page = write_report(tmp_path / "r.html", ground_truth,
                        [ReportRun("x", detections, evaluate_detections(ground_truth, detections, [0.5]))])
    dom, log = rendered(page, tmp_path)
    assert_clean_render(dom, log)
    text = " ".join(visible_text(dom).split())
    for label, count in (("start before 0 s", 1), ("end after the video", 1), ("end before start", 2)):
        assert f"scored: {label} {count}" in text, label
