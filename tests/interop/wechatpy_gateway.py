"""An unchanged wechatpy WeChatClient pointed at wxmp's API gateway, with a dummy AppSecret.

Usage: wechatpy_gateway.py GATEWAY_URL APPID [IMAGE_FILE FAKE_API_URL]

wechatpy fetches its token from a fixed https://api.weixin.qq.com URL (not from its API base),
so it is given any access_token: the gateway replaces it with wxmp's own.

With IMAGE_FILE, it uploads the picture as temporary media (media.upload) and as permanent
material (material.add), checks that wxmp fake-api at FAKE_API_URL holds the very same bytes
(read straight from the fake with wxmp's token, which the gateway hands out), and downloads
both back through the gateway (media.download, material.get).
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
    import requests

    image, fake = sys.argv[3], sys.argv[4]
    with open(image, "rb") as f:
        data = f.read()
    with open(image, "rb") as f:
        res = client.media.upload("image", f)
    assert res.get("media_id"), res
    media_id = res["media_id"]
    print("media.upload:", media_id)
    with open(image, "rb") as f:
        res = client.material.add("image", f)
    assert res.get("media_id"), res
    material_id = res["media_id"]
    print("material.add:", material_id)
    # What the fake holds, read from the fake itself with the token wxmp hands out.
    token = requests.get(
        gateway + "/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": appid, "secret": "dummy"},
    ).json()["access_token"]
    held = requests.get(
        fake + "/cgi-bin/media/get", params={"access_token": token, "media_id": media_id}
    )
    assert held.content == data, ("media", held.status_code, held.content[:200])
    held = requests.post(
        fake + "/cgi-bin/material/get_material",
        params={"access_token": token},
        json={"media_id": material_id},
    )
    assert held.content == data, ("material", held.status_code, held.content[:200])
    print("the fake holds both:", len(data), "bytes, identical")
    # Back through the gateway, as wechatpy reads them: a file comes back as the response.
    got = client.media.download(media_id)
    assert got.content == data, ("media.download", got.headers, got.content[:200])
    print("media.download:", len(got.content), "bytes, identical")
    got = client.material.get(material_id)
    assert got.content == data, ("material.get", got.headers, got.content[:200])
    print("material.get:", len(got.content), "bytes, identical")
