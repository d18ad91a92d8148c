"""Checks that the built documentation renders its maths offline, in a headless browser.

    python .ci/check_rendered_math.py docs/_build/html

Every page with maths is opened from disk in headless Chromium (network off) and the DOM is read
after its scripts ran. A page passes when each of its math elements was typeset by the bundled
MathJax (an ``mjx-container`` inside it) and no raw TeX delimiter (``\\(``, ``\\[``) is left
in the visible text, and no page loads a script from the network.
"""

import glob
import html.parser
import os
import re
import shutil
import subprocess
import sys

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# A page that loads nothing from the network: --host-resolver-rules sends every host nowhere.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--dump-dom"]


class _MathCounter(html.parser.HTMLParser):
  """Counts math elements, typeset ones, and the visible text outside scripts and styles."""

  def __init__(self):
    super().__init__()
    self.math, self.typeset, self.text, self._stack = 0, 0, [], []

  def handle_starttag(self, tag, attrs):
    classes = (dict(attrs).get("class") or "").split()
    if tag in ("span", "div") and "math" in classes:
      self.math += 1
    if tag == "mjx-container":
      self.typeset += 1
    self._stack.append(tag)

  def handle_endtag(self, tag):
    while self._stack and self._stack.pop() != tag:
      pass

  def handle_data(self, data):
    if not set(self._stack) & {"script", "style", "mjx-assistive-mml"}:
      self.text.append(data)


def check_page(browser: str, path: str) -> list[str]:
  with open(path) as f:
    source = f.read()
  problems = [f"{path}: loads {src} from the network" for src in
              re.findall(r'<script[^>]+src="(https?://[^"]+)"', source)]
  output = subprocess.run([browser, *FLAGS, "file://" + os.path.abspath(path)],
                          capture_output=True, text=True, timeout=120)
  if output.returncode != 0:
    return problems + [f"{path}: {browser} exited {output.returncode}: {output.stderr[-500:]}"]
  page = _MathCounter()
  page.feed(output.stdout)
  text = "".join(page.text)
  if page.typeset < page.math:
    problems.append(f"{path}: {page.math - page.typeset} of {page.math} math elements were not "
                    "typeset")
  raw = re.findall(r"\\[(\[].{0,40}", text)
  if raw:
    problems.append(f"{path}: raw TeX left in the page: {raw[:3]}")
  return problems


def main(build_dir: str) -> int:
  browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
  if browser is None:
    print(f"check_rendered_math: no browser found ({', '.join(BROWSERS)}); install Debian's "
          "chromium (apt-get install chromium).", file=sys.stderr)
    return 1
  pages = [p for p in sorted(glob.glob(os.path.join(build_dir, "**", "*.html"), recursive=True))
           if 'class="math' in open(p).read()]
  if not pages:
    print(f"check_rendered_math: no page with maths under {build_dir}", file=sys.stderr)
    return 1
  problems = [problem for page in pages for problem in check_page(browser, page)]
  for problem in problems:
    print(problem, file=sys.stderr)
  print(f"check_rendered_math: {len(pages)} pages with maths, {len(problems)} problems")
  return 1 if problems else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/_build/html"))
