"""Open results/report.html in headless Chromium as a reader would: take a screenshot and
fail on console errors (script errors, failed loads) or images that do not load.

    python scripts/check_report.py [results/report.html] [--screenshot results/report.png]

Installs Debian's chromium with apt-get when no chromium is on PATH.
"""

from __future__ import annotations

import argparse
import base64
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True)
    return shutil.which("chromium") or sys.exit("chromium did not install")


def broken_images(page: Path) -> list[str]:
    """<img> sources that are neither a decodable data: image nor an existing file."""
    bad = []
    for src in re.findall(r'<img[^>]*\ssrc="([^"]*)"', page.read_text(encoding="utf-8")):
        try:
            if src.startswith("data:image/"):
                Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
            elif not (page.parent / src).is_file():
                raise FileNotFoundError(src)
        except Exception as e:  # any failure to decode or find means a broken image
            bad.append(f"{src[:40]}... ({type(e).__name__})")
    return bad


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("page", nargs="?", default="results/report.html")
    p.add_argument("--screenshot", default=None, help="default: beside the page, .png")
    args = p.parse_args()
    page = Path(args.page).resolve()
    if not page.is_file():
        sys.exit(f"{page}: no such report (run `bltlab analyze` first)")
    shot = Path(args.screenshot or page.with_suffix(".png")).resolve()
    run = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                          f"--screenshot={shot}", "--window-size=1280,4000",
                          "--enable-logging=stderr", "--v=0", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    problems = console + [f"broken image: {b}" for b in broken_images(page)]
    if run.returncode != 0 or not shot.is_file() or shot.stat().st_size == 0:
        problems.append(f"chromium failed (exit {run.returncode})")
    for line in problems:
        print(line)
    if problems:
        sys.exit(f"{page}: {len(problems)} problem(s)")
    print(f"{page}: no console errors, all images load; screenshot {shot}")


if __name__ == "__main__":
    main()
