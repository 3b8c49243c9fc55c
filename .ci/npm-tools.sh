# shellcheck shell=bash
# Sourced by the CI scripts that run tools from npm. `npm_tools DIR NAME`
# installs the packages locked in DIR/package-lock.json with `npm ci` into
# ~/.cache/erp-connect/node-tools/NAME, once per lock file: a warm run finds
# them there and installs nothing. Prints the install folder.
npm_tools() {
  local src=$1 name=$2
  local root="$HOME/.cache/erp-connect/node-tools"
  local dest="$root/$name"
  mkdir -p "$root"
  (
    # Two runs on one machine (CI and a developer) must not install into
    # the same folder at once.
    flock 9
    if ! cmp -s "$src/package-lock.json" "$dest/package-lock.json" \
      || ! cmp -s "$src/package.json" "$dest/package.json" \
      || [ ! -f "$dest/node_modules/.package-lock.json" ]; then
      rm -rf "$dest"
      mkdir -p "$dest"
      cp "$src/package.json" "$src/package-lock.json" "$src/.npmrc" "$dest/"
      # Downloaded tarballs are kept apart, so a changed lock file only
      # fetches what changed.
      (cd "$dest" && npm_config_cache="$HOME/.cache/erp-connect/npm" \
        npm ci --no-audit --no-fund --loglevel=error) >&2 || { rm -rf "$dest"; exit 1; }
    fi
  ) 9>"$root/$name.lock" || return 1
  echo "$dest"
}
