"""Plays WeChat with an independent implementation (wechatpy) against a running wxmp.

Encrypts a text message with wechatpy exactly as the platform does in safe mode, signs the
request, posts it, then verifies and decrypts the reply with wechatpy and checks its content.
Exit 0 on success; any mismatch raises. Usage: wechatpy_peer.py URL TOKEN AES_KEY APPID
"""
import hashlib
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET

from wechatpy.crypto import WeChatCrypto


def sign(*parts):
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def main():
    url, token, aes_key, appid = sys.argv[1:5]
    crypto = WeChatCrypto(token, aes_key, appid)
    for n, (content, expected) in enumerate((("天气", "北京天气挺好的！"), ("hello 你好 ]]> <&>", "hello 你好 ]]> <&>"))):
        # A nonce per push, as WeChat does: wxmp refuses a signed query reused on another body.
        timestamp, nonce = str(int(time.time())), str(1234567890 + n)
        msg_id = str(int(time.time() * 1000))
        plain = (
            "<xml><ToUserName><![CDATA[gh_interop]]></ToUserName>"
            "<FromUserName><![CDATA[o_interop]]></FromUserName>"
            f"<CreateTime>{timestamp}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{content.replace(']]>', ']]]]><![CDATA[>')}]]></Content>"
            f"<MsgId>{msg_id}</MsgId></xml>"
        )
        envelope = ET.fromstring(crypto.encrypt_message(plain, nonce, timestamp))
        encrypt = envelope.find("Encrypt").text
        msg_signature = envelope.find("MsgSignature").text
        assert msg_signature == sign(token, timestamp, nonce, encrypt)
        body = f"<xml><ToUserName><![CDATA[gh_interop]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        query = (
            f"?signature={sign(token, timestamp, nonce)}&timestamp={timestamp}&nonce={nonce}"
            f"&openid=o_interop&encrypt_type=aes&msg_signature={msg_signature}"
        )
        req = urllib.request.Request(url + query, data=body.encode(), method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            reply = resp.read().decode()
        root = ET.fromstring(reply)
        # wechatpy checks the envelope's MsgSignature and the AppID while decrypting.
        inner = crypto.decrypt_message(
            reply,
            root.find("MsgSignature").text,
            root.find("TimeStamp").text,
            root.find("Nonce").text,
        )
        got = ET.fromstring(inner)
        assert got.find("MsgType").text == "text", inner
        assert got.find("ToUserName").text == "o_interop", inner
        assert got.find("FromUserName").text == "gh_interop", inner
        assert got.find("Content").text == expected, (got.find("Content").text, expected)
        print(f"wechatpy: {content!r} -> {expected!r} ok")


if __name__ == "__main__":
    main()
