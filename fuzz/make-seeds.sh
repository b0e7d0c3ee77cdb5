#!/usr/bin/env bash
# Regenerates the committed seed corpus (fuzz/corpus/<target>/seed-*) from tests/fixtures and
# examples/rules.toml. The flag bytes for post_handler and decrypt are documented in those targets.
set -eu
cd "$(dirname "$0")"
fx=../tests/fixtures
c=corpus
rm -f "$c"/*/seed-*
mkdir -p "$c"/parse_message "$c"/decrypt "$c"/rules_file "$c"/post_handler "$c"/http_parser
# One raw byte, 0..255.
byte() {
    # shellcheck disable=SC2059 # the format is the escape being built
    printf "\\x$(printf %02x "$1")"
}

# parse_message: every XML fixture, as is.
for f in "$fx"/*.xml; do
    cp "$f" "$c/parse_message/seed-$(basename "$f" .xml)"
done

# decrypt: mode byte, then the payload.
encrypt=$(sed -n 's/.*<Encrypt><!\[CDATA\[\(.*\)\]\]><\/Encrypt>.*/\1/p' "$fx/safe_compat_sample.xml")
{ printf '\0'; printf '%s' "$encrypt"; } >"$c/decrypt/seed-sample-encrypt"
# Mode 1 is a raw plaintext: random(16) | length (big-endian) | xml | appid | PKCS#7 to 32.
xml=$(cat "$fx/safe_compat_sample_decrypted.xml")
appid=wx2c2769f8efd9abc2
len=$(printf '%s' "$xml" | wc -c)
total=$((16 + 4 + len + ${#appid}))
pad=$((32 - total % 32))
{
    printf '\1'
    printf '0123456789abcdef'
    byte $((len >> 24 & 255)); byte $((len >> 16 & 255)); byte $((len >> 8 & 255)); byte $((len & 255))
    printf '%s%s' "$xml" "$appid"
    for _ in $(seq "$pad"); do byte "$pad"; done
} >"$c/decrypt/seed-sample-plain"
{ printf '\2'; cat "$fx/text.xml"; } >"$c/decrypt/seed-roundtrip-text"
{ printf '\2'; cat "$fx/java_vector_b_plain.xml"; } >"$c/decrypt/seed-roundtrip-video"
{ printf '\3'; printf 'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG'; } >"$c/decrypt/seed-key"

# rules_file: the example, and one rule of every reply kind.
cp ../examples/rules.toml "$c/rules_file/seed-example"
cat >"$c/rules_file/seed-every-kind" <<'TOML'
[[rules]]
regex = '^(?P<word>\w+) (\d+)$'
reply.text = "${word} {{${2}}} {content} {from_user} {to_user}"

[[rules]]
msg_type = "voice"
reply.voice = "media-{from_user}"

[[rules]]
msg_type = "image"
reply.image = "media"

[[rules]]
event = "SCAN"
key_regex = '^\d+$'
reply.video = { media_id = "m", title = "{scene}", description = "{event_key}" }

[[rules]]
event = "subscribe"
reply.news = [{ title = "a", description = "b", url = "https://e.com/", pic_url = "https://e.com/p" }, { title = "c", description = "d", url = "u", pic_url = "p" }]

[[rules]]
event = "VIEW"
reply.transfer_customer_service = "kf@test"

[[rules]]
contains = "x"
reply = "success"

[default]
reply.text = "{content}"
TOML

# Forwarding to the user's own code, in both transports and both forms.
cat >"$c/rules_file/seed-forward" <<'TOML'
[[rules]]
event = "CLICK"
reply.command = { argv = ["python3", "bot.py", "--flag"], fallback = { text = "wait {content}" } }

[[rules]]
text = "x"
reply.command = ["sh", "bot.sh"]

[default]
reply.forward = { url = "http://127.0.0.1:9000/wechat", fallback = "echo" }
TOML
cp ../examples/forward.toml "$c/rules_file/seed-forward-example"

# TOML escapes and multi-line strings, so the fuzzer can reach any character.
cat >"$c/rules_file/seed-escapes" <<'TOML'
[[rules]]
text = "tab\tand \u00e9 \U0001F600"
reply.text = """
line one
{content}\r\n"""

[default]
reply.transfer_customer_service = { kf_account = 'kf\raw' }
TOML

# post_handler: flag byte, query, newline, body. Flags: bits 0-1 method (POST, GET, POST, PUT),
# 4 sign, 8 safe-mode service, 16 wrap the body in Encrypt, 32 the query line is the whole URL,
# 64 wrong AppID when wrapping, 128 send Content-Length.
post() { # name flags query body-file
    { byte "$2"; printf '%s\n' "$3"; cat "$4"; } >"$c/post_handler/seed-$1"
}
for f in text image voice_recognition location link event_subscribe_qrscene event_click \
    event_scan event_location_select event_pic_weixin event_masssendjobfinish unknown \
    hostile_control_chars hostile_cdata_end hostile_doctype_entities; do
    post "plain-$f" $((4 | 128)) "" "$fx/$f.xml"
done
for f in text event_subscribe video; do
    post "safe-$f" $((4 | 8 | 16)) "openid=o1" "$fx/$f.xml"
done
post "compat-plain-service" $((4 | 16)) "" "$fx/text.xml"
post "unsigned" 0 "" "$fx/text.xml"
post "verify-get" $((1 | 4)) "echostr=a%2Bb%3D" /dev/null
post "put" $((3 | 4)) "" "$fx/text.xml"
# The official compatible-mode sample with its own signatures (the target's token is spamtest).
sig=$(printf '%s\n' spamtest 1409735669 1320562132 | sort | tr -d '\n' | sha1sum | cut -d' ' -f1)
post "compat-official" $((8 | 32)) \
    "/weixin?signature=$sig&timestamp=1409735669&nonce=1320562132&openid=oyORnuP8q7ou2gfYjqLzSIWZf0rs&encrypt_type=aes&msg_signature=5d197aaffba7e9b25a30732f161a50dee96bd5fa" \
    "$fx/safe_compat_sample.xml"
post "healthz" $((1 | 32)) "/healthz" /dev/null
post "unknown-path" $((32)) "/nope?x=1" "$fx/text.xml"

# http_parser: a body-limit byte (x16), then what a client sends: pipelined requests, chunked
# bodies with extensions and trailers, and each kind of head the parser must refuse.
http() { # NAME LIMIT-BYTE TEXT (printf escapes)
    { byte "$2"; printf "$3"; } >"$c/http_parser/seed-$1"
}
http get 64 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'
http pipelined 64 'GET / HTTP/1.1\r\nHost: x\r\n\r\nHEAD /healthz HTTP/1.1\r\n\r\nGET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /y HTTP/1.1\r\nConnection: close\r\n\r\n'
http post-length 64 'POST /weixin?signature=a&timestamp=1&nonce=2 HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: 13\r\n\r\n<xml></xml>\r\nGET / HTTP/1.1\r\n\r\n'
http chunked 64 'POST /weixin HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\nGET / HTTP/1.1\r\n\r\n'
http chunked-over-limit 1 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n0123456789abcdef0123456789abcdef\r\n0\r\n\r\n'
http expect 64 'POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc'
http http2 64 'GET / HTTP/2.0\r\n\r\n'
http h2c-preface 64 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'
http smuggle-cl-cl 64 'POST / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 18\r\n\r\nGET /s HTTP/1.1\r\n\r\n'
http smuggle-te-cl 64 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n'
http te-gzip 64 'POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n'
http obs-fold 64 'GET / HTTP/1.1\r\nX-A: 1\r\n X-B: 2\r\n\r\n'
http method-ctl 64 'GE\033T / HTTP/1.1\r\n\r\n'
http bare-lf 64 'GET / HTTP/1.1\nHost: x\n\n'
http non-ascii 64 'GET / HTTP/1.1\r\nX-Name: caf\303\251\r\n\r\n'

echo "$(find "$c" -name 'seed-*' | wc -l) seeds"
