"""Headless Chromium, driven from the command line (no Python browser package): a layout check of
an HTML page (does anything stick out past the viewport, does every image load) and a screenshot
of its first screen. Used by the report's browser test and ``benchmarks/screenshot_report.py``.

The layout check copies the page to a temporary folder, adds a ``<base>`` pointing at the page's
own folder (so that relative image paths still resolve) and a script that measures the page once
it has loaded and writes the result as JSON into a ``<pre id="layout-check">``; ``chromium
--dump-dom`` prints the DOM and the JSON is read back out of it."""

from __future__ import annotations

import html
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile
from typing import Any, Optional

__all__ = ["find_chromium", "check_page", "screenshot"]

ENV_VAR = "CAPTUM_UNCERTAINTY_CHROMIUM"
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
_TIMEOUT_S = 120
_RESULT_ID = "layout-check"

# Runs at the end of <body>. Lazy images are made eager first (headless Chromium does not load
# those below the fold), then on `load` it waits for every image to settle and measures. An element
# counts as too wide when its right edge passes the layout viewport (documentElement.clientWidth,
# which is innerWidth less a vertical scrollbar, if any) by more than half a pixel, unless an
# ancestor that fits clips or scrolls it (a wide table inside an `overflow-x: auto` box): those are
# listed apart, under "scrolled_inside".
_CHECK_SCRIPT = r"""
<script>
(function () {
  var MAX_LISTED = 20;
  for (var i = 0; i < document.images.length; i++) {
    if (document.images[i].loading === "lazy") { document.images[i].loading = "eager"; }
  }
  function settle(img) {
    if (img.complete) { return Promise.resolve(); }
    return new Promise(function (resolve) {
      img.addEventListener("load", resolve, {once: true});
      img.addEventListener("error", resolve, {once: true});
      setTimeout(resolve, 5000);
    });
  }
  function describe(el) {
    var text = (el.innerText || el.textContent || "").replace(/\s+/g, " ").trim();
    var rect = el.getBoundingClientRect();
    var cls = typeof el.className === "string" ? el.className : (el.getAttribute("class") || "");
    return {tag: el.tagName.toLowerCase(), id: el.id || "", "class": cls, text: text.slice(0, 60),
            left: Math.round(rect.left), right: Math.round(rect.right), width: Math.round(rect.width)};
  }
  function clippingAncestor(el, limit) {
    for (var a = el.parentElement; a && a !== document.body && a !== document.documentElement;
         a = a.parentElement) {
      var ox = getComputedStyle(a).overflowX;
      if (ox !== "visible" && a.getBoundingClientRect().right <= limit) { return a; }
    }
    return null;
  }
  function measure() {
    var root = document.documentElement;
    var limit = root.clientWidth + 0.5;
    var tooWide = [], scrolled = [], nTooWide = 0, nScrolled = 0;
    var all = document.body ? document.body.getElementsByTagName("*") : [];
    for (var i = 0; i < all.length; i++) {
      var el = all[i];
      if (el.tagName === "SCRIPT" || el.tagName === "STYLE") { continue; }
      if (el.getBoundingClientRect().right <= limit) { continue; }
      var box = clippingAncestor(el, limit);
      if (box) {
        nScrolled++;
        if (scrolled.length < MAX_LISTED) {
          var entry = describe(el);
          entry.inside = describe(box).tag + (box.id ? "#" + box.id : "") +
            (box.getAttribute("class") ? "." + box.getAttribute("class").split(/\s+/).join(".") : "");
          scrolled.push(entry);
        }
      } else {
        nTooWide++;
        if (tooWide.length < MAX_LISTED) { tooWide.push(describe(el)); }
      }
    }
    var broken = [];
    for (var j = 0; j < document.images.length; j++) {
      var img = document.images[j];
      if (!img.complete || img.naturalWidth === 0) {
        var src = img.getAttribute("src") || img.currentSrc || "";
        broken.push({src: src.slice(0, 80), alt: (img.alt || "").slice(0, 60),
                     complete: img.complete, natural_width: img.naturalWidth});
      }
    }
    var result = {
      inner_width: window.innerWidth, inner_height: window.innerHeight,
      client_width: root.clientWidth, scroll_width: root.scrollWidth,
      scroll_height: root.scrollHeight,
      too_wide: tooWide, too_wide_count: nTooWide,
      scrolled_inside: scrolled, scrolled_inside_count: nScrolled,
      broken_images: broken, images: document.images.length
    };
    var pre = document.createElement("pre");
    pre.id = "%(result_id)s";
    pre.textContent = JSON.stringify(result);
    document.body.appendChild(pre);
  }
  window.addEventListener("load", function () {
    var waits = [];
    for (var k = 0; k < document.images.length; k++) { waits.push(settle(document.images[k])); }
    var fonts = document.fonts ? document.fonts.ready : Promise.resolve();
    Promise.all(waits.concat([fonts])).then(function () {
      setTimeout(measure, 50);
    });
  });
})();
</script>
""".replace("%(result_id)s", _RESULT_ID)

_RESULT_RE = re.compile(r'<pre id="' + _RESULT_ID + r'"[^>]*>(.*?)</pre>', re.DOTALL)


def find_chromium() -> Optional[str]:
    """The Chromium (or Chrome) executable: ``$CAPTUM_UNCERTAINTY_CHROMIUM`` if set (a path or a
    name on ``PATH``), else the first of chromium, chromium-browser, google-chrome on ``PATH``;
    None when there is none."""
    override = os.environ.get(ENV_VAR)
    if override:
        return shutil.which(override) or (override if os.access(override, os.X_OK) else None)
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _require_chromium() -> str:
    binary = find_chromium()
    if binary is None:
        raise RuntimeError(f"no Chromium found (looked for {', '.join(_CANDIDATES)} on PATH and ${ENV_VAR})")
    return binary


def _common_flags(user_data_dir: str, width: int, height: int) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={user_data_dir}",
        f"--window-size={int(width)},{int(height)}",
    ]


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run Chromium in its own process group, so that on a timeout its helpers (zygote, renderer,
    GPU process) are ended with it."""
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        stdout, stderr = proc.communicate()
        raise RuntimeError(f"chromium took more than {_TIMEOUT_S} s: {' '.join(command)}\n{stderr}") from None
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def _instrumented(page: str, folder_uri: str) -> str:
    """The page with a ``<base>`` at the top of its head (unless it has one) and the check script
    just before its last ``</body>`` (or at its end)."""
    if not re.search(r"<base\b", page, re.IGNORECASE):
        base = f'<base href="{html.escape(folder_uri, quote=True)}">'
        for anchor in (r"<head\b[^>]*>", r"<html\b[^>]*>", r"<!doctype\b[^>]*>"):
            match = re.search(anchor, page, re.IGNORECASE)
            if match:
                page = page[: match.end()] + base + page[match.end() :]
                break
        else:
            page = base + page
    end = page.lower().rfind("</body>")
    return page + _CHECK_SCRIPT if end < 0 else page[:end] + _CHECK_SCRIPT + page[end:]


def check_page(html_path: str | os.PathLike[str], width: int = 1280, height: int = 900) -> dict[str, Any]:
    """Load the page in headless Chromium at ``width`` x ``height`` and report its layout:
    ``viewport`` (the width asked for), ``inner_width`` and ``client_width`` (the window's and the
    layout viewport's, which differ by a vertical scrollbar when there is one), ``scroll_width``,
    ``too_wide`` (at most 20 elements whose right edge passes the viewport, each with tag, id,
    class, its first 60 characters of text and its width; ``too_wide_count`` counts them all),
    ``scrolled_inside`` (wide elements kept inside a box that scrolls or clips and fits),
    ``broken_images`` (images not loaded or of zero natural width, with their src attribute as
    written in the page, cut to 80 characters),
    ``images`` (how many ``<img>``) and ``fits`` (no horizontal scrolling, nothing too wide, no
    broken image). Raises RuntimeError, with Chromium's stderr, when no result comes back."""
    source = pathlib.Path(html_path).resolve()
    page = source.read_text(encoding="utf-8")
    binary = _require_chromium()
    with tempfile.TemporaryDirectory(prefix="captum-uncertainty-browser-") as tmp:
        copy = pathlib.Path(tmp) / source.name
        copy.write_text(_instrumented(page, source.parent.as_uri() + "/"), encoding="utf-8")
        profile = pathlib.Path(tmp) / "profile"
        profile.mkdir()
        command = [
            binary,
            *_common_flags(str(profile), width, height),
            "--virtual-time-budget=10000",
            "--dump-dom",
            copy.as_uri(),
        ]
        completed = _run(command)
    match = _RESULT_RE.search(completed.stdout)
    if match is None:
        raise RuntimeError(
            f"no layout result from chromium for {source} (exit status {completed.returncode}); "
            f"stderr:\n{completed.stderr}"
        )
    result: dict[str, Any] = {"viewport": int(width), "height": int(height)}
    result.update(json.loads(html.unescape(match.group(1))))
    result["fits"] = (
        result["scroll_width"] <= result["client_width"] and not result["too_wide"] and not result["broken_images"]
    )
    return result


def screenshot(
    html_path: str | os.PathLike[str], png_path: str | os.PathLike[str], width: int = 1280, height: int = 900
) -> pathlib.Path:
    """Save the page's first screen, ``width`` x ``height`` pixels without scrollbars, as a PNG;
    returns its path. Raises RuntimeError, with Chromium's stderr, when no PNG is written."""
    source = pathlib.Path(html_path).resolve()
    if not source.is_file():
        raise FileNotFoundError(source)
    target = pathlib.Path(png_path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    binary = _require_chromium()
    with tempfile.TemporaryDirectory(prefix="captum-uncertainty-browser-") as tmp:
        command = [
            binary,
            *_common_flags(tmp, width, height),
            "--hide-scrollbars",
            "--virtual-time-budget=10000",
            f"--screenshot={target}",
            source.as_uri(),
        ]
        completed = _run(command)
    if not target.is_file() or target.stat().st_size == 0:
        raise RuntimeError(
            f"chromium wrote no screenshot of {source} to {target} (exit status {completed.returncode}); "
            f"stderr:\n{completed.stderr}"
        )
    return target
