#!/usr/bin/env bash
# Installs the OHIF Viewer's production build from the npm package @ohif/app (pinned) into
# ohif-dist/, re-based from "/" to "/ohif/" so `lightbox serve --ohif` can serve it beside our
# own viewer. The build's public path is baked in at "/"; we rewrite the three places that
# carry it (index.html links, window.PUBLIC_URL, webpack's runtime public path).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${OHIF_VERSION:-3.13.2}"
DEST="${1:-ohif-dist}"
if [[ -f "$DEST/.ohif-version" && "$(cat "$DEST/.ohif-version")" == "$VERSION" ]]; then
  echo "OHIF $VERSION already in $DEST"; exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
( cd "$work" && npm pack "@ohif/app@${VERSION}" --silent >/dev/null )
rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp"
tar xzf "$work/ohif-app-${VERSION}.tgz" -C "$DEST.tmp" --strip-components=2 package/dist
python3 - "$DEST.tmp" <<'PY'
import pathlib, re, sys
root = pathlib.Path(sys.argv[1])
index = root / "index.html"
html = index.read_text(encoding="utf-8")
html = html.replace('window.PUBLIC_URL="/"', 'window.PUBLIC_URL="/ohif/"')
html = re.sub(r'(href|src)="/(?!/)', r'\1="/ohif/', html)
index.write_text(html, encoding="utf-8")
patched = 0
for bundle in root.glob("*.js"):
    text = bundle.read_text(encoding="utf-8", errors="surrogateescape")
    if '__webpack_require__.p = "/";' in text:
        bundle.write_text(text.replace('__webpack_require__.p = "/";', '__webpack_require__.p = "/ohif/";'),
                          encoding="utf-8", errors="surrogateescape")
        patched += 1
if patched == 0:
    sys.exit("no webpack public path found to re-base")
# Root-absolute asset URLs in the web manifest, the stylesheets (fonts) and the service worker.
for name in ["manifest.json", "sw.js", *(p.name for p in root.glob("*.css"))]:
    path = root / name
    if path.is_file():
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        text = re.sub(r'(url\(|")/(?!/|ohif/)', r"\1/ohif/", text)
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
PY
rm -f "$DEST.tmp/app-config.js"   # served by the server, pointing at itself
echo "$VERSION" > "$DEST.tmp/.ohif-version"
rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
echo "OHIF $VERSION installed in $DEST ($(ls "$DEST" | wc -l) entries)"
