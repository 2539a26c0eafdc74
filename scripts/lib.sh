# Shared by the install scripts (sourced, not run).

# apt_install PKG…: install the Debian packages that are missing, with one `apt-get update` at most.
apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

# require_root NAME: stop with a message unless running as root.
require_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "$1: run as root (it installs apt packages)" >&2
    exit 1
  fi
}
