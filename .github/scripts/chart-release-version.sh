#!/usr/bin/env bash
# Prints the chart version X.Y.Z a release tag chart-vX.Y.Z publishes, after checking that
# the tag is exactly of that form and that charts/openchat-backend/Chart.yaml says the same
# version (what is published is what the repository holds at the tag).
#   chart-release-version.sh <tag> [<Chart.yaml>]
set -euo pipefail
tag="${1:?usage: chart-release-version.sh <tag> [<Chart.yaml>]}"
chart_yaml="${2:-charts/openchat-backend/Chart.yaml}"
if [[ ! "$tag" =~ ^chart-v([0-9]+\.[0-9]+\.[0-9]+)$ ]]; then
  echo "tag '$tag' is not of the form chart-vX.Y.Z (^chart-v[0-9]+\\.[0-9]+\\.[0-9]+\$)" >&2
  exit 1
fi
version="${BASH_REMATCH[1]}"
chart_version=$(sed -n -E 's/^version:[[:space:]]*"?([^"[:space:]]+)"?[[:space:]]*$/\1/p' "$chart_yaml")
if [ "$chart_version" != "$version" ]; then
  echo "tag '$tag' publishes $version but $chart_yaml has version '${chart_version}'" >&2
  exit 1
fi
echo "$version"
