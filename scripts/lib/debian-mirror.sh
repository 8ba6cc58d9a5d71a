# shellcheck shell=bash
# Sourced by scripts/lib/setup.sh and molecule/resources/build-image.sh.

# First Debian mirror named in apt's configured sources (deb822 or one-line format)
# that serves "debian" (not -security); deb.debian.org otherwise.
debian_mirror() {
  local m
  m="$(
    {
      grep -hE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -E 's/^[[:space:]]*URIs:[[:space:]]*//' | tr ' ' '\n'
      grep -hE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | sed -E 's/\[[^]]*\]//' | awk '{print $2}'
    } | grep -E '^https?://' | grep -E '/debian/?$' | head -n1
  )"
  echo "${m:-http://deb.debian.org/debian}"
}
