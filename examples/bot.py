#!/usr/bin/env python3
"""A small WeChat bot behind wxmp, in Python's standard library only.

wxmp forwards each push to it as JSON (WeChat Cloud Hosting's shape) and sends its JSON answer
to WeChat as the passive reply, inside WeChat's deadline or on a retry (see the README's
"Your own code" section).

    python3 examples/bot.py                      # listens on http://127.0.0.1:9000/wechat
    WXMP_TOKEN=devtoken wxmp serve --port 8080 --rules examples/forward.toml
    wxmp send text 天气          # 北京：晴，25°C。北京天气挺好的！
    wxmp send text 天气 上海     # 上海：多云，28°C。
    wxmp send --retries 3 text 慢   # answered on WeChat's second attempt (7 s)

Set WXMP_FORWARD_SECRET for both wxmp and the bot: the bot then refuses any request whose
X-Wxmp-Signature is not the HMAC-SHA256 of the body with that secret.
"""

import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("BOT_PORT", "9000"))
SECRET = os.environ.get("WXMP_FORWARD_SECRET", "").encode()

# A small local table, so the example needs no network.
WEATHER = {
    "北京": "晴，25°C。北京天气挺好的！",
    "上海": "多云，28°C。",
    "广州": "雷阵雨，30°C，带伞。",
    "深圳": "阵雨，29°C。",
}


def signed(body: bytes, header: str) -> bool:
    """True when the request carries the right signature (or no secret is set)."""
    if not SECRET:
        return True
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header or "")


def answer(push: dict):
    """The reply to one push, in Cloud Hosting's JSON shape; None means no reply."""
    msg_type = push.get("MsgType")
    if msg_type == "text":
        words = push.get("Content", "").split()
        if words and words[0] == "天气":
            city = words[1] if len(words) > 1 else "北京"
            report = WEATHER.get(city, "没有这个城市的天气。")
            return {"MsgType": "text", "Content": f"{city}：{report}"}
        if words and words[0] in ("慢", "slow"):
            # Longer than WeChat's 5 s: wxmp holds WeChat's retry open and answers on it.
            time.sleep(7)
            return {"MsgType": "text", "Content": "这条回答用了 7 秒，微信的第二次请求带回了它。"}
        return {"MsgType": "text", "Content": "你说：" + push.get("Content", "")}
    if msg_type == "event" and push.get("Event") == "subscribe":
        return {"MsgType": "text", "Content": "欢迎关注！发送「天气 上海」试试。"}
    return None


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if not signed(body, self.headers.get("X-Wxmp-Signature")):
            self.send_error(403, "bad signature")
            return
        try:
            push = json.loads(body)
        except ValueError:
            self.send_error(400, "not JSON")
            return
        reply = answer(push)
        out = b"success" if reply is None else json.dumps(reply, ensure_ascii=False).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, fmt, *args):
        sys.stderr.write("bot: " + (fmt % args) + "\n")


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    print(f"bot listening on http://127.0.0.1:{server.server_address[1]}/wechat", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
