// Text outputs that are wider than the page column (the column holds 80 characters of the
// monospace font; the package prints lines of at most 80). Kept outputs of older runs, tables and
// generated text may be wider. Each is made to fit, so that no output scrolls sideways:
// - a block at most a third too wide (a table, a long line) is set in a smaller font that fits,
//   so that its columns stay aligned;
// - anything wider wraps at the column (a long list, a generated paragraph).
// tests/test_website.py measures every page in a browser at 1280 px.
function bookFitOutputs() {
  const blocks = document.querySelectorAll(
    "div.cell_output pre, div.output pre, div.cell_output .output_text pre");
  for (const pre of blocks) {
    if (pre.scrollWidth <= pre.clientWidth + 1) continue;
    const ratio = pre.clientWidth / pre.scrollWidth;
    if (ratio >= 0.75) {
      const size = parseFloat(getComputedStyle(pre).fontSize);
      pre.style.fontSize = `${Math.floor(size * ratio * 10) / 10}px`;
    }
    if (pre.scrollWidth > pre.clientWidth + 1) {
      pre.style.fontSize = "";
      pre.style.whiteSpace = "pre-wrap";
      pre.style.overflowWrap = "anywhere";
    }
    pre.dataset.fitted = "1";
  }
}
if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", bookFitOutputs);
} else {
  bookFitOutputs();
}
