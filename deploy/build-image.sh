#!/usr/bin/env bash
# Builds the Parley image and tags it <image>:<semver>-<gitsha>, the version
# from Cargo.toml's [workspace.package] and the short commit from git (with
# ".dirty" when the work tree has uncommitted changes: such a tag names no commit).
#
#   deploy/build-image.sh --print          # print the tag only
#   deploy/build-image.sh                  # docker build -f deploy/Dockerfile -t <tag> .
#   IMAGE=registry.example.com/parley deploy/build-image.sh --push
#
# One image serves every service (the command picks it: `parley command-api`,
# ...), so <service> in the convention is the image name, `parley` by default.
set -euo pipefail
cd "$(dirname "$0")/.."

image="${IMAGE:-parley}"
version="$(python3 -c 'import tomllib;print(tomllib.load(open("Cargo.toml","rb"))["workspace"]["package"]["version"])')"
sha="$(git rev-parse --short=12 HEAD)"
if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
  sha="${sha}.dirty"
fi
tag="${image}:${version}-${sha}"

case "${1:-build}" in
  --print)
    echo "$tag"
    ;;
  build | --push)
    docker build -f deploy/Dockerfile \
      --build-arg VERSION="$version" --build-arg GIT_SHA="$(git rev-parse HEAD)" \
      -t "$tag" .
    echo "built $tag"
    if [[ "${1:-}" == "--push" ]]; then
      docker push "$tag"
    fi
    ;;
  *)
    echo "usage: $0 [--print | --push]" >&2
    exit 2
    ;;
esac
