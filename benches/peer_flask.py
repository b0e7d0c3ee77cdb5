"""The Flask app wxmp replaces, as a peer for `make bench` (run under gunicorn).

GET checks the signature and returns echostr; POST checks it, parses the XML, answers the text
天气 with the weather, echoes other text, and says "success" to everything else.
"""
import hashlib
import os
import time
import xml.etree.ElementTree as ET

from flask import Flask, request

TOKEN = os.environ.get("WXMP_TOKEN", "benchtoken")
app = Flask(__name__)

REPLY = (
    "<xml><ToUserName><![CDATA[{to}]]></ToUserName><FromUserName><![CDATA[{frm}]]></FromUserName>"
    "<CreateTime>{now}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
    "<Content><![CDATA[{content}]]></Content></xml>"
)


def signed():
    a = request.args
    parts = sorted([TOKEN, a.get("timestamp", ""), a.get("nonce", "")])
    return hashlib.sha1("".join(parts).encode()).hexdigest() == a.get("signature", "")


@app.route("/weixin", methods=["GET", "POST"])
def weixin():
    if not signed():
        return "forbidden", 403
    if request.method == "GET":
        return request.args.get("echostr", "")
    root = ET.fromstring(request.get_data())
    if root.findtext("MsgType") != "text":
        return "success"
    content = root.findtext("Content") or ""
    if content == "天气":
        content = "北京天气挺好的！"
    body = REPLY.format(
        to=root.findtext("FromUserName"),
        frm=root.findtext("ToUserName"),
        now=int(time.time()),
        content=content,
    )
    return body, 200, {"Content-Type": "application/xml; charset=utf-8"}
