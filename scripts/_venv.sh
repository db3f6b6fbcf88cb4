# Sourced by scripts/gateway, scripts/docs and scripts/test: a project virtualenv with the package installed.
# Usage: ensure_venv EXTRAS   (e.g. "" or "[test]")
#
# pip runs only when pyproject.toml changed since the venv was last installed with these extras
# (the install is editable, so code edits need no reinstall): a stamp per extras holds the hash.
ensure_venv() {
  local extras="$1"
  if [ ! -x .venv/bin/python ]; then
    if ! python3 -m venv .venv 2>/dev/null; then
      # Debian's python3 ships venv support in a separate package.
      rm -rf .venv
      apt_install python3-venv
      python3 -m venv .venv
    fi
  fi
  local stamp=".venv/.installed${extras}" want s
  want="$(_venv_inputs_hash)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  if [ -z "$extras" ]; then
    # Any extras install brought the package and its own dependencies too.
    for s in .venv/.installed*; do
      if [ -f "$s" ] && [ "$(cat "$s")" = "$want" ]; then
        return 0
      fi
    done
  fi
  rm -f "$stamp"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}"
  # Written only after pip succeeded: a failed install is retried on the next call.
  printf '%s\n' "$want" >"$stamp"
}

# What the install depends on: pyproject.toml (and a lock file, should one appear).
_venv_inputs_hash() {
  local f
  for f in pyproject.toml requirements.lock; do
    if [ -f "$f" ]; then
      printf '%s\n' "$f"
      cat "$f"
    fi
  done | sha256sum | cut -d' ' -f1
}

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: $* (run as root, or install them first)" >&2
    return 1
  fi
  if [ -z "${_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    _APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
