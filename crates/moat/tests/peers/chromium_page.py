"""A headless Chromium driven over the DevTools protocol, for the page checks
(webchat_check.py, radio_check.py): start it with the flags this machine needs, and a
Page to evaluate script and wait for conditions in."""

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websockets

CHROMIUM = os.environ.get("MOAT_CHROMIUM", "/usr/bin/chromium")


def fail(why):
    print("FAIL " + why, flush=True)
    sys.exit(1)


class Page:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    async def call(self, method, **params):
        self.next_id += 1
        my_id = self.next_id
        await self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    fail(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def eval(self, expression):
        r = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            fail(f"script error in {expression!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait_for(self, expression, what, timeout=60):
        # A page still loading has no body yet: that is "not yet", not a failure.
        guarded = f"(() => {{ try {{ return !!({expression}); }} catch (e) {{ return false; }} }})()"
        deadline = time.time() + timeout
        while time.time() < deadline:
            if await self.eval(guarded):
                return
            await asyncio.sleep(0.2)
        shown = await self.eval("document.body ? document.body.innerText : ''")
        fail(f"{what} did not happen within {timeout}s; the page shows:\n{shown}")


@contextlib.asynccontextmanager
async def chromium(*flags):
    """A fresh headless Chromium (an empty profile, no background networking) and its
    first tab as a Page, with the Page and Runtime domains on."""
    profile = tempfile.mkdtemp(prefix="moat-chromium-")
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         *flags, "--user-data-dir=" + profile, "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.time() + 60
        while not os.path.exists(port_file) or not open(port_file).read().strip():
            if time.time() > deadline or browser.poll() is not None:
                fail("Chromium did not start")
            time.sleep(0.1)
        port = open(port_file).read().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        target = next(t for t in targets if t["type"] == "page")
        async with websockets.connect(target["webSocketDebuggerUrl"], max_size=None) as ws:
            page = Page(ws)
            await page.call("Page.enable")
            await page.call("Runtime.enable")
            yield page
    finally:
        browser.kill()
        browser.wait()
        shutil.rmtree(profile, ignore_errors=True)
