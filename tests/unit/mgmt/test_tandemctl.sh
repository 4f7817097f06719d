#!/usr/bin/env bash
# tandemctl against the management API over the in-memory backend: every
# command, table and --json output, errors with the server's message and a
# non-zero exit, CHAP secrets read from a file and never printed.
#   test_tandemctl.sh FIXTURE_SERVER TANDEMCTL
set -euo pipefail
SERVER=$1
CTL=$2
TMP=$(mktemp -d /tmp/tnd-ctl.XXXXXX)
PID=
cleanup() {
	[ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

mkdir -m 700 "$TMP/data"
"$SERVER" "$TMP/data" >"$TMP/port" 2>"$TMP/server.log" &
PID=$!
for _ in $(seq 1 100); do
	[ -s "$TMP/port" ] && break
	sleep 0.05
done
PORT=$(cat "$TMP/port")
[ -n "$PORT" ] || fail "fixture server did not start: $(cat "$TMP/server.log")"

T=iqn.2026-11.io.tandem:t1
I=iqn.1994-05.com.redhat:host1
SECRET=chap-secret-never-shown-1
MSECRET=mutual-secret-never-shown-2

ctl() { "$CTL" --url "http://127.0.0.1:$PORT" --data-dir "$TMP/data" "$@"; }

# ok CMD...: must succeed; output in $out.
ok() {
	out=$(ctl "$@" 2>&1) || fail "tandemctl $* failed: $out"
	if grep -q -e "$SECRET" -e "$MSECRET" <<<"$out"; then
		fail "tandemctl $* printed a CHAP secret"
	fi
}
# bad CODE PATTERN CMD...: must exit CODE with PATTERN on stderr.
bad() {
	local code=$1 pattern=$2 rc=0
	shift 2
	out=$(ctl "$@" 2>&1) || rc=$?
	[ "$rc" = "$code" ] || fail "tandemctl $* exited $rc, want $code: $out"
	grep -q -- "$pattern" <<<"$out" || fail "tandemctl $*: no \"$pattern\" in: $out"
}
has() { grep -q -- "$1" <<<"$out" || fail "expected \"$1\" in: $out"; }
hasnt() { ! grep -q -- "$1" <<<"$out" || fail "did not expect \"$1\" in: $out"; }

ok version
has "tandemd"

ok device create d1 --type lsfs --size 10GiB --dedup --compress lz4
has "device d1 created: lsfs, 10 GiB"
ok device create d2 --type flat --size 1048576 --block-size 4096
ok device list
has "NAME"
has "d1 *lsfs *10 GiB *512 *online"
has "compress=lz4"
has "dedup=yes"
ok --json device list
has '"name": "d1"'
ok device show d1
has "read_ops"
has "dedup_ratio"
ok device grow d1 20GiB
has "20 GiB"
bad 1 "size: devices cannot shrink" device grow d1 1GiB
ok device set d1 compress=none dedup=false
has "compress=none"
has "dedup=no"
ok device set d1 compress_mode=deferred
has "compress_mode=deferred"
bad 1 "compress_mode: must be one of: inline, adaptive, deferred" device set d1 compress_mode=lazy
bad 1 "path: cannot be changed" device set d1 path=/x
bad 1 "type: \"zfs\" is not a device type" device create d3 --type zfs --size 1GiB
bad 1 "name: \"bad name\" is not a valid name" device create "bad name" --size 1GiB
bad 1 "a device named d1 exists" device create d1 --size 1GiB

ok target create "$T" --alias "first target"
has "no initiator admitted"
bad 1 "iqn: " target create NOT-AN-IQN
ok lun map "$T" 0 d1
ok lun map "$T" 1 d2
bad 1 "LUN 1 is already mapped" lun map "$T" 1 d2
bad 1 "no device named nope" lun map "$T" 2 nope
ok lun list "$T"
has "0 *d1"

printf '%s\n' "$SECRET" >"$TMP/secret"
printf '%s' "$MSECRET" >"$TMP/msecret"
chmod 600 "$TMP/secret" "$TMP/msecret"
ok acl add "$T" "$I" --luns 0,1 --chap-user alice --chap-secret-file "$TMP/secret" \
	--mutual-chap-user tgt --mutual-chap-secret-file "$TMP/msecret"
has "with CHAP"
printf 'short\n' >"$TMP/short"
bad 1 "chap.secret: must be a string of 12 to 255 bytes" \
	acl add "$T" iqn.1994-05.com.redhat:host2 --chap-user bob --chap-secret-file "$TMP/short"
bad 2 "go together" acl add "$T" iqn.1994-05.com.redhat:host2 --chap-user bob
ok acl list "$T"
has "$I *0,1 *alice *tgt"
ok --json acl list "$T"
has '"user": "alice"'
hasnt '"secret"'
ok target show "$T"
has "first target"
has "1 ACL"
ok target list
has "$T *first target *0:d1,1:d2 *1 ACL"
ok --json target show "$T"
hasnt '"secret"'

bad 1 "mapped as a LUN" device delete d1
ok session list
has "1 *$T *$I *127.0.0.1:50000 *1"
ok stats
has "uptime_seconds"
has "d1"
ok session kick 1
bad 1 "No such file or directory" session kick 1

# The persisted configuration: 0600, with the secret (for the restart).
[ "$(stat -c %a "$TMP/data/config.json")" = 600 ] || fail "config.json is not 0600"
grep -q "$SECRET" "$TMP/data/config.json" || fail "config.json lacks the CHAP secret"

ok acl remove "$T" "$I"
ok lun unmap "$T" 1
ok device delete d1 --force
ok lun list "$T"
hasnt "d1"
ok target delete "$T"
ok device delete d2
ok --json device list
has '"devices": \[\]'

# Credentials and usage.
printf '%064d\n' 0 >"$TMP/wrong"
bad 1 "missing or wrong bearer token" --token-file "$TMP/wrong" device list
bad 1 "cannot read the API token" --data-dir "$TMP/nowhere" device list
bad 1 "cannot reach" --url http://127.0.0.1:1 device list
bad 2 "unknown command" frobnicate
bad 2 "unknown option --frob" device list --frob
bad 2 "does not apply" device list --force
bad 2 "Usage: tandemctl device grow" device grow d1
"$CTL" --help | grep -q "acl add" || fail "--help lacks acl add"

# Over TLS, with the server's certificate as the CA.
if openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/key.pem" -out "$TMP/cert.pem" \
	-days 1 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1; then
	mkdir -m 700 "$TMP/tls"
	"$SERVER" "$TMP/tls" "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/tls-port" 2>"$TMP/tls.log" &
	TPID=$!
	for _ in $(seq 1 100); do
		[ -s "$TMP/tls-port" ] && break
		sleep 0.05
	done
	TPORT=$(cat "$TMP/tls-port")
	out=$("$CTL" --url "https://127.0.0.1:$TPORT" --cacert "$TMP/cert.pem" \
		--data-dir "$TMP/tls" device create t1 --size 1GiB 2>&1) ||
		{ kill "$TPID"; fail "tandemctl over TLS: $out"; }
	rc=0
	out=$("$CTL" --url "https://127.0.0.1:$TPORT" --data-dir "$TMP/tls" device list 2>&1) ||
		rc=$?
	kill "$TPID"
	wait "$TPID" || true
	[ "$rc" = 1 ] || fail "an unverified certificate was accepted: $out"
else
	echo "note: no openssl, TLS not tested"
fi

echo "tandemctl: ok"
