"""Uses `wxmp fake-api` as a new user would: through wechatpy's WeChatClient, unchanged but for
its API address (wechatpy 1.8 hard-codes the token URL, so the subclass names the fake's).

Checks what real SDKs tripped over: menu/get's empty sub_button, customer-service types and
45008, music without a thumbnail, escaped Chinese (40033), an unserved endpoint's errcode, and
the material and media endpoints. Prints one line per check; any mismatch raises.
Usage: wechatpy_fake_api.py BASE APPID SECRET
"""
import io
import json
import sys
import urllib.request

from wechatpy import WeChatClient
from wechatpy.exceptions import WeChatClientException

PNG = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + b"\0" * 64
JPEG = b"\xff\xd8\xff\xe0\0\x10JFIF" + b"\0" * 64


def refused(code, call):
    try:
        call()
    except WeChatClientException as e:
        assert e.errcode == code, f"expected {code}, got {e.errcode}: {e.errmsg}"
        return e.errmsg
    raise AssertionError(f"expected errcode {code}, but the call succeeded")


def main():
    base, appid, secret = sys.argv[1:4]

    class Client(WeChatClient):
        API_BASE_URL = base + "/cgi-bin/"

        def fetch_access_token(self):
            return self._fetch_access_token(
                url=base + "/cgi-bin/token",
                params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
            )

    c = Client(appid, secret)

    c.menu.create({"button": [
        {"type": "click", "name": "今日歌曲", "key": "SONG"},
        {"name": "菜单", "sub_button": [{"type": "view", "name": "搜索", "url": "https://www.soso.com/"}]},
    ]})
    menu = c.menu.get()["menu"]["button"]
    assert menu[0]["sub_button"] == [], menu
    assert menu[1]["sub_button"][0]["sub_button"] == [], menu
    print("menu: create, get with sub_button []")

    c.message.send_text("o_py", "你好 😀")
    c.message.send_card("o_py", "CARD_1")
    c.message.send_articles("o_py", "MEDIA_NEWS")
    c.post("message/custom/send", data={
        "touser": "o_py", "msgtype": "mpnewsarticle", "mpnewsarticle": {"article_id": "ART_1"},
    })
    c.message.send_mini_program_page("o_py", {
        "title": "小程序", "appid": "wxmini", "pagepath": "pages/index", "thumb_media_id": "TH",
    })
    c.message.send_msg_menu("o_py", {
        "head_content": "满意吗?", "list": [{"id": "101", "content": "满意"}], "tail_content": "谢谢",
    })
    article = {"title": "t", "description": "d", "url": "https://e.com/", "image": "https://e.com/p.png"}
    refused(45008, lambda: c.message.send_articles("o_py", [article, article]))
    refused(47001, lambda: c.post("message/custom/send", data={
        "touser": "o_py", "msgtype": "music", "music": {"musicurl": "https://e.com/a.mp3"},
    }))
    print("kf: text, wxcard, mpnews, mpnewsarticle, miniprogrampage, msgmenu; 45008; music needs thumb_media_id")

    # Python's json.dumps escapes Chinese unless ensure_ascii=False (wechatpy sets it).
    escaped = json.dumps({"button": [{"type": "click", "name": "今日", "key": "K"}]})
    url = f"{base}/cgi-bin/menu/create?access_token={c.access_token}"
    answer = json.load(urllib.request.urlopen(urllib.request.Request(url, data=escaped.encode())))
    assert answer["errcode"] == 40033, answer
    print("escaped Chinese: 40033")

    msg = refused(40066, lambda: c.user.get("o_py"))
    assert "/cgi-bin/user/info" in msg, msg
    print("unserved endpoint:", msg.split(" rid:")[0])

    tmp = c.media.upload("image", ("menu.png", io.BytesIO(PNG)))
    assert tmp["type"] == "image", tmp
    assert c.media.download(tmp["media_id"]).content == PNG
    mat = c.material.add("image", ("menu.png", io.BytesIO(PNG)))
    assert mat["url"], mat
    thumb = c.material.add("thumb", ("cover.jpg", io.BytesIO(JPEG)))
    refused(40005, lambda: c.material.add("thumb", ("cover.jpg", io.BytesIO(PNG))))
    video = c.material.add("video", ("v.mp4", io.BytesIO(b"\0\0\0\x18ftypmp42" + b"\0" * 32)), "标题", "简介")
    assert c.material.get(video["media_id"])["title"] == "标题"
    listed = c.material.batchget("image")
    assert [i["media_id"] for i in listed["item"]] == [mat["media_id"]], listed
    assert c.material.get(mat["media_id"]).content == PNG
    c.material.delete(thumb["media_id"])
    refused(40007, lambda: c.material.delete(thumb["media_id"]))
    print("media: upload, download; material: add image/thumb/video, batchget, get, delete")


if __name__ == "__main__":
    main()
