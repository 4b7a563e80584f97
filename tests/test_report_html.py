"""The report as a reader sees it: rendered by headless Chromium, the numbers of table.csv are
text on the page (no download needed). Skipped, saying why, where Chromium (Debian's `chromium`
or `chromium-headless-shell`) or pdftotext (`poppler-utils`) is not installed; .ci/run installs
them."""
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from cbdm.report import build_report, format_value

BROWSERS = ("chromium", "chromium-headless-shell", "chromium-browser")

# Opens the report's table.html item the way its menu does (the report keeps its React app in the
# global `app` and its files in `results`), so that the printed page shows the item.
OPEN_ITEM = """<script>
window.addEventListener('load', function () { setTimeout(function () {
  var path = Object.keys(results).find(function (p) { return p.endsWith('/table.html'); });
  app.setView({content: 'html', contentPath: results[path].data_uri, resultPath: path});
}, 500); });
</script>"""


def with_item_opened(report: str) -> str:
    """The report with OPEN_ITEM before its closing body tag (the last one: the bundled
    libraries hold the string too)."""
    head, tag, tail = report.rpartition("</body>")
    return head + OPEN_ITEM + tag + tail


def browser() -> str:
    found = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if found is None:
        pytest.skip("no headless Chromium installed (apt-get install chromium); .ci/run installs it")
    return found


def headless(url: Path, tmp_path: Path, *args: str) -> str:
    """Run Chromium headless on a local file; its stdout (the DOM with --dump-dom)."""
    command = [browser(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
               "--virtual-time-budget=15000", *args, url.resolve().as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def printed_text(url: Path, tmp_path: Path, window: str = "1400,1000") -> str:
    """The text of the page as Chromium prints it (what is rendered, frames included)."""
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext is not installed (apt-get install poppler-utils); .ci/run installs it")
    pdf = tmp_path / "page.pdf"
    headless(url, tmp_path, f"--window-size={window}", "--no-pdf-header-footer", f"--print-to-pdf={pdf}")
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout


def test_table_html_shows_every_section_as_text_after_its_script_runs(report_inputs, tmp_path):  # noqa: F811
    build_report(**report_inputs)
    out = report_inputs["outputs"]
    dom = headless(Path(out["html"]), tmp_path, "--dump-dom")
    for heading in ("Protocol card", "Main table: protocol", "Per-class table", "Overlap diagnostics",
                    "Memorization audit", "Differences to ddpm", "Spread over seeds", "Training data"):
        assert heading in dom, heading
    agg = pd.read_csv(out["csv"])
    fid = agg[(agg.protocol == "ours") & (agg.variant == "ddpm") & (agg.guidance == 1.0) & (agg.scope == "all")
              & (agg.metric == "fid")].iloc[0]
    assert f"<td>{format_value(fid, 'fid')}</td>" in dom  # '11 ± 1', the mean ± sd over three seeds
    assert "sortable" in dom and "<caption>" in dom

