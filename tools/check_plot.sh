#!/usr/bin/env bash
# Renders an SVG (e.g. `embstore stats --plot`) in headless Chromium and saves a PNG screenshot,
# to look at a chart the way a browser shows it. Installs chromium (apt) when no Chromium or
# Chrome is found.
#
#   tools/check_plot.sh FILE.svg OUT.png [WIDTHxHEIGHT]
#
# The window defaults to the SVG's own width and height attributes.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 FILE.svg OUT.png [WIDTHxHEIGHT]" >&2
    exit 2
fi
svg=$1
out=$2
[ -f "$svg" ] || { echo "$svg: no such file" >&2; exit 1; }

browser=""
for candidate in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$candidate" >/dev/null 2>&1; then browser=$(command -v "$candidate"); break; fi
done
if [ -z "$browser" ]; then
    echo "installing chromium (apt-get install chromium)" >&2
    log=$(mktemp)
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        echo "could not install chromium" >&2
        exit 1
    fi
    rm -f "$log"
    browser=$(command -v chromium)
fi

if [ $# -ge 3 ]; then
    size=$3
else
    # The first width= and height= attributes of the <svg> element.
    root=$(tr '\n' ' ' < "$svg" | grep -o '<svg[^>]*>' | head -n 1)
    width=$(printf '%s' "$root" | grep -o ' width="[0-9.]*"' | head -n 1 | grep -o '[0-9.]*' | cut -d. -f1)
    height=$(printf '%s' "$root" | grep -o ' height="[0-9.]*"' | head -n 1 | grep -o '[0-9.]*' | cut -d. -f1)
    size="${width:-1000}x${height:-800}"
fi
# Headless Chromium shows less than a very short window asks for: keep it at least 200 high.
w=${size%x*}; h=${size#*x}
[ "$h" -ge 200 ] 2>/dev/null || h=200
size="${w}x${h}"
window=${size/x/,}

svg_path=$(cd "$(dirname "$svg")" && pwd)/$(basename "$svg")
out_path=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
rm -f "$out_path"
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1 \
    --user-data-dir="$profile" --window-size="$window" --screenshot="$out_path" "file://$svg_path" >/dev/null 2>&1 || true
if [ ! -s "$out_path" ]; then
    echo "$browser did not write $out_path" >&2
    exit 1
fi
echo "$out_path ($size)"
