"""An unchanged wechatpy WeChatClient pointed at wxmp's API gateway, with a dummy AppSecret.

Usage: wechatpy_gateway.py GATEWAY_URL APPID [IMAGE_FILE]

wechatpy fetches its token from a fixed https://api.weixin.qq.com URL (not from its API base),
so it is given any access_token: the gateway replaces it with wxmp's own.
"""
import sys

from wechatpy import WeChatClient

gateway, appid = sys.argv[1], sys.argv[2]
client = WeChatClient(appid, "dummy-secret", access_token="ANY_TOKEN_THE_GATEWAY_REPLACES")
client.API_BASE_URL = gateway + "/cgi-bin/"

client.menu.create({"button": [{"type": "click", "name": "今日歌曲", "key": "V1001_TODAY_MUSIC"}]})
menu = client.menu.get()
assert menu["menu"]["button"][0]["name"] == "今日歌曲", menu
print("menu.get:", menu["menu"]["button"][0]["name"])
client.message.send_text("o_wechatpy_user", "来自 wechatpy")
print("message.send_text: ok")
if len(sys.argv) > 3:
    with open(sys.argv[3], "rb") as f:
        res = client.media.upload("image", f)
    assert res.get("media_id"), res
    print("media.upload:", res["media_id"])
