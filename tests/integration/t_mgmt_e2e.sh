#!/usr/bin/env bash
# The management API end to end, through tandemctl against a real tandemd.
# Creates a device, a target, a LUN map and an ACL with CHAP through
# tandemctl; an initiator with the right name and secret logs in and sees the
# LUN, others are refused; after a restart everything is still there.
source "$(dirname "$0")/lib.sh"

T=iqn.2026-11.io.tandem:e2e
INI=iqn.2026-11.io.tandem:e2e-initiator
OTHER=iqn.2026-11.io.tandem:someone-else
SECRET=e2e-chap-secret-0123
DATA="$TND_TMP/data"
mkdir -m 700 "$DATA"


start_with_mgmt
[ "$(stat -c %a "$DATA/api.token")" = 600 ] || fail "api.token is not 0600"

# No token, no API.
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT/v1/devices")
[ "$code" = 401 ] || fail "GET /v1/devices without a token answered $code"

ctl device create e2e --type flat --size 64MiB || fail "device create"
ctl target create "$T" --alias "e2e target" || fail "target create"
ctl lun map "$T" 0 e2e || fail "lun map"
printf '%s\n' "$SECRET" >"$TND_TMP/secret"
chmod 600 "$TND_TMP/secret"
ctl acl add "$T" "$INI" --luns 0 --chap-user alice --chap-secret-file "$TND_TMP/secret" ||
	fail "acl add"
ctl target show "$T"
if ctl --json target show "$T" | grep -q "$SECRET"; then
	fail "the API returned the CHAP secret"
fi

url="iscsi://alice%$SECRET@127.0.0.1:$TND_PORT/$T/0"
check_login() {
	out=$(iscsi-readcapacity16 -i "$INI" "$url") || fail "login as $INI failed: $out"
	grep <<<"$out" -q "RETURNED LOGICAL BLOCK ADDRESS:131071" ||
		fail "LUN 0 is not 64 MiB: $out"
	if iscsi-readcapacity16 -i "$OTHER" "$url" >/dev/null 2>&1; then
		fail "an initiator without an ACL logged in"
	fi
	if iscsi-readcapacity16 -i "$INI" "iscsi://alice%wrong-secret-000@127.0.0.1:$TND_PORT/$T/0" \
		>/dev/null 2>&1; then
		fail "a wrong CHAP secret was accepted"
	fi
}
check_login

ctl device grow e2e 128MiB || fail "device grow"
ctl device grow e2e 64MiB && fail "a device shrank"
ctl device delete e2e && fail "a mapped device was deleted without --force"

[ "$(stat -c %a "$DATA/config.json")" = 600 ] || fail "config.json is not 0600"
stop_tandemd

# Restart: the configuration comes back from config.json.
start_with_mgmt
ctl device list | grep -q "e2e" || fail "device e2e lost across a restart"
ctl acl list "$T" | grep -q "$INI" || fail "ACL lost across a restart"
url="iscsi://alice%$SECRET@127.0.0.1:$TND_PORT/$T/0"   # the portal port is new
out=$(iscsi-readcapacity16 -i "$INI" "$url") || fail "login after restart failed: $out"
grep <<<"$out" -q "RETURNED LOGICAL BLOCK ADDRESS:262143" ||
	fail "LUN 0 is not 128 MiB after the restart: $out"

ctl session list
ctl stats
ctl acl remove "$T" "$INI" || fail "acl remove"
ctl lun unmap "$T" 0 || fail "lun unmap"
ctl target delete "$T" || fail "target delete"
ctl device delete e2e || fail "device delete"
stop_tandemd
echo "mgmt e2e: ok"
