"""Drives moat's web chat in a real headless Chromium over the DevTools protocol.

usage: webchat_check.py CHAT_URL WS_URL
  CHAT_URL  the address `moat chat --web` prints (control token in the fragment)
  WS_URL    ws://HOST:PORT/chat/ws of the same server

It sends a message, waits for the approval the scripted model's shell call asks for,
approves it, waits for the streamed final reply, then opens a page of another origin
that tries the WebSocket with the right token, which must be refused. Prints one line
per step; exits 1 with the reason on the first failure.
"""

import asyncio
import http.server
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chromium_page import chromium, fail  # noqa: E402


def foreign_site():
    """A page on another origin (another port of loopback)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<!doctype html><title>elsewhere</title><p>another site</p>"
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


async def main(chat_url, ws_url):
    token = chat_url.split("#token=", 1)[1]
    async with chromium() as page:
        await page.call("Page.navigate", url=chat_url)
        await page.wait_for("document.getElementById('status') && document.getElementById('status').textContent === 'connected'", "connecting")
        if await page.eval("location.hash") != "":
            fail("the token stayed in the address bar")
        print("connected; the token left the address bar", flush=True)

        await page.eval("document.getElementById('input').value = 'run the check'; document.getElementById('compose').requestSubmit(); true")
        await page.wait_for("document.querySelector('.approval button.approve') !== null", "the approval prompt")
        shown = await page.eval("document.querySelector('.approval').innerText")
        if "shell" not in shown or "echo approved-by-the-web" not in shown:
            fail("the approval does not show the tool and its arguments: " + shown)
        print("asked: " + " ".join(shown.split()), flush=True)
        await page.eval("document.querySelector('.approval button.approve').click(); true")
        await page.wait_for("document.getElementById('log').innerText.includes('The check passed.')", "the final reply")
        await page.wait_for("!document.getElementById('send').disabled", "the turn ending")
        log = await page.eval("document.getElementById('log').innerText")
        if "approved-by-the-web" not in log or "✓ shell" not in log:
            fail("the shell call's result is not shown:\n" + log)
        # Markup in a reply is text, never HTML.
        if await page.eval("document.querySelector('#log img') !== null"):
            fail("a reply's markup became HTML")
        print("approved; the reply arrived: " + log.strip().splitlines()[-1], flush=True)

        # The owner answers pairing requests here too: /pair is theirs, not the model's.
        await page.eval("document.getElementById('input').value = '/pair list'; document.getElementById('compose').requestSubmit(); true")
        await page.wait_for("document.getElementById('log').innerText.includes('no pairing request is waiting')", "the /pair answer")
        await page.wait_for("!document.getElementById('send').disabled", "the /pair command ending")
        print("/pair list answered in the page", flush=True)

        site = foreign_site()
        await page.call("Page.navigate", url=f"http://127.0.0.1:{site.server_address[1]}/")
        await page.wait_for("document.title === 'elsewhere'", "the other site loading")
        outcome = await page.eval(
            "new Promise(resolve => {"
            f"  const s = new WebSocket({json.dumps(ws_url)}, ['moat.chat.v1', 'moat.token.' + {json.dumps(token)}]);"
            "  s.onopen = () => resolve('open');"
            "  s.onerror = () => resolve('refused');"
            "  setTimeout(() => resolve('timeout'), 10000);"
            "})")
        if outcome != "refused":
            fail("a WebSocket from another origin was " + outcome)
        print("another origin's WebSocket was refused", flush=True)
        site.shutdown()


asyncio.run(main(sys.argv[1], sys.argv[2]))
print("OK", flush=True)
