#!/bin/sh
# certbot deploy hook for Kraken: runs after each successful issuance or renewal of the
# lineage it is configured on (renew_hook in /etc/letsencrypt/renewal/<name>.conf, or
# --deploy-hook), with RENEWED_LINEAGE=/etc/letsencrypt/live/<name>.
#
# 1. checks the new pair with Kraken's own loader (key matches, not expired): a broken pair
#    is never installed, so a later restart can't fail on it;
# 2. installs fullchain.pem (0644) and privkey.pem (0640, group kraken) into Kraken's TLS
#    directory: temp files in that directory, then rename over the old ones (atomic per file);
# 3. asks Kraken to reload: new handshakes get the new certificate, no connection is dropped.
#
# Environment (defaults in brackets):
#   KRAKEN_TLS_DIR     where kraken.toml's [tls] cert/key point  [/etc/kraken/tls]
#   KRAKEN_OWNER       owner of the installed files              [root]
#   KRAKEN_GROUP       group that may read the key               [kraken]
#   KRAKEN_CHECK_CMD   checker run as: $KRAKEN_CHECK_CMD CERT KEY; empty skips it
#                      [/opt/kraken/.venv/bin/python -m kraken.http.tls]
#   KRAKEN_RELOAD_CMD  how to reload  [systemctl try-reload-or-restart kraken.service]
#                      (try-: a stopped Kraken stays stopped and picks the files up at start)
# Exit status: 0 installed and reloaded; non-zero otherwise (certbot logs the hook's stderr).
set -eu

tls_dir=${KRAKEN_TLS_DIR:-/etc/kraken/tls}
owner=${KRAKEN_OWNER:-root}
group=${KRAKEN_GROUP:-kraken}
check_cmd=${KRAKEN_CHECK_CMD-/opt/kraken/.venv/bin/python -m kraken.http.tls}
reload_cmd=${KRAKEN_RELOAD_CMD:-systemctl try-reload-or-restart kraken.service}

fail() { echo "kraken deploy hook: $*" >&2; exit 1; }

[ -n "${RENEWED_LINEAGE:-}" ] || fail "RENEWED_LINEAGE is not set (run me from certbot)"
src_cert=$RENEWED_LINEAGE/fullchain.pem
src_key=$RENEWED_LINEAGE/privkey.pem
for f in "$src_cert" "$src_key"; do
  if ! { [ -f "$f" ] && [ -r "$f" ] && [ -s "$f" ]; }; then
    fail "$f is missing, unreadable or empty"
  fi
done
[ -d "$tls_dir" ] || fail "$tls_dir is not a directory (create it: install -d -m 0750 -o root -g kraken $tls_dir)"

if [ -n "$check_cmd" ]; then
  check_bin=${check_cmd%% *}
  command -v "$check_bin" >/dev/null 2>&1 ||
    fail "checker $check_bin not found: set KRAKEN_CHECK_CMD (empty skips the check); nothing installed"
  # word splitting of the command is intended
  # shellcheck disable=SC2086
  $check_cmd "$src_cert" "$src_key" >/dev/null || fail "new certificate refused; nothing installed"
fi

umask 077
tmp_cert=$(mktemp "$tls_dir/.fullchain.pem.XXXXXX")
tmp_key=$(mktemp "$tls_dir/.privkey.pem.XXXXXX")
trap 'rm -f "$tmp_cert" "$tmp_key"' EXIT
trap 'exit 1' HUP INT TERM

cat "$src_cert" >"$tmp_cert"
cat "$src_key" >"$tmp_key"
chown "$owner:$group" "$tmp_cert" "$tmp_key"
chmod 0644 "$tmp_cert"
chmod 0640 "$tmp_key"
sync "$tmp_cert" "$tmp_key" 2>/dev/null || sync
# Key first: until the certificate follows, Kraken's loader sees a mismatch and keeps
# serving the old pair (it only reads the files on reload/start).
mv -f "$tmp_key" "$tls_dir/privkey.pem"
mv -f "$tmp_cert" "$tls_dir/fullchain.pem"
trap - EXIT

sh -c "$reload_cmd" || fail "installed, but the reload command failed: $reload_cmd"
echo "kraken deploy hook: installed $(basename "$RENEWED_LINEAGE") into $tls_dir and reloaded"
