"""The first screen of an HTML report as a PNG (for docs/_static), taken by headless Chromium, and
the report's layout check at the same size: whether anything sticks out past the viewport and
whether every image loads.

    python benchmarks/screenshot_report.py out/benchmark/report.html docs/_static/report.png
    python benchmarks/screenshot_report.py REPORT_HTML OUT_PNG --width 1280 --height 900

Exits with status 1 (after writing the PNG) when the layout check finds a problem, 2 when there is
no Chromium."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from captum_uncertainty.experiments._browser import check_page, find_chromium, screenshot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=pathlib.Path, help="the report's HTML file")
    parser.add_argument("png", type=pathlib.Path, help="where to write the screenshot")
    parser.add_argument("--width", type=int, default=1280, help="viewport width in pixels (default 1280)")
    parser.add_argument("--height", type=int, default=900, help="viewport height in pixels (default 900)")
    args = parser.parse_args(argv)
    if not args.report.is_file():
        parser.error(f"no such file: {args.report}")
    if find_chromium() is None:
        print("no Chromium found: install Debian's chromium (or set $CAPTUM_UNCERTAINTY_CHROMIUM)", file=sys.stderr)
        return 2

    png = screenshot(args.report, args.png, width=args.width, height=args.height)
    print(f"wrote {png} ({args.width} x {args.height})")
    result = check_page(args.report, width=args.width, height=args.height)
    print(json.dumps(result, indent=2))
    if result["fits"]:
        print(f"layout check: fits {args.width} px, {result['images']} images, none broken")
        return 0
    print(
        f"layout check FAILED at {args.width} px: scroll width {result['scroll_width']} "
        f"(viewport {result['client_width']}), {result['too_wide_count']} elements too wide, "
        f"{len(result['broken_images'])} broken images",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
