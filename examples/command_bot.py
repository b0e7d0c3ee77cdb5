#!/usr/bin/env python3
"""The same contract as examples/bot.py, as a command: the push's JSON on stdin, the reply's
JSON (or nothing, or `success`) on stdout. wxmp runs it once per push, without a shell, in the
rules file's folder, and kills it at the deadline. Anything on stderr goes to wxmp's log.

    WXMP_TOKEN=devtoken wxmp serve --port 8080 --rules examples/command.toml
    wxmp send text 你好          # 命令行收到：你好
"""

import json
import sys

push = json.load(sys.stdin)
if push.get("MsgType") == "text":
    print(json.dumps({"MsgType": "text", "Content": "命令行收到：" + push.get("Content", "")},
                     ensure_ascii=False))
    print(f"answered {push.get('MsgId')}", file=sys.stderr)
else:
    print("success")
