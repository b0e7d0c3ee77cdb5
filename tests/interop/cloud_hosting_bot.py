"""A bot written for WeChat Cloud Hosting (云托管), as WeChat's own samples are
(WeixinCloud/message-push-nodejs): it refuses a push without X-WX-SOURCE, takes the sender from
X-WX-OPENID, and calls the API at http://api.weixin.qq.com with no access_token, which inside
Cloud Hosting its 开放接口服务 sidecar signs. Behind wxmp, HTTP_PROXY points at wxmp's gateway
instead. Nothing here knows about wxmp.

Usage: cloud_hosting_bot.py  (prints the port it listens on, then serves until killed)
"""
import json
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WEIXIN_API = "http://api.weixin.qq.com/cgi-bin/message/custom/send"


class Bot(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        # 没有x-wx-source头的，不是微信的来源，不处理
        if not self.headers.get("x-wx-source"):
            self.send_response(400)
            self.end_headers()
            self.wfile.write(b"Invalid request source")
            return
        openid = self.headers.get("x-wx-openid", "")
        push = json.loads(body)
        # 免鉴权发送消息: no token, plain http, as in Cloud Hosting.
        payload = {
            "touser": openid,
            "msgtype": "text",
            "text": {"content": "云托管 bot got: " + push.get("Content", "")},
        }
        req = urllib.request.Request(
            WEIXIN_API,
            data=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            result = json.loads(r.read())
        answer = {
            "MsgType": "text",
            "Content": "hello %s, errcode %s" % (openid, result.get("errcode")),
        }
        data = json.dumps(answer, ensure_ascii=False).encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Bot)
print(server.server_address[1], flush=True)
server.serve_forever()
