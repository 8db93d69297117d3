"""Drives moat's radio player page in a real headless Chromium over the DevTools protocol.

usage: radio_check.py CONTROL_URL LAN_URL
  CONTROL_URL  the address `moat radio open` prints (main listener, token in the fragment)
  LAN_URL      the player on the LAN listener (http://127.0.0.2:PORT/radio/)

On the main listener: the page trades the token for its session cookie and drops it from
the address bar, shows the controls, plays the live stream (the audio element's
currentTime advances), shows now playing with its cover, and a skip changes what plays;
a search queues a song, which the plan then shows. From the LAN address: the page plays
but shows no controls, and every control call it tries is refused. Prints one line per
step; exits 1 with the reason on the first failure.
"""

import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chromium_page import chromium, fail  # noqa: E402


async def plays(page, where):
    """The audio element's clock advances by more than two seconds."""
    await page.wait_for("document.getElementById('audio').currentTime > 0.5", f"audio starting ({where})")
    start = await page.eval("document.getElementById('audio').currentTime")
    await asyncio.sleep(3)
    later = await page.eval("document.getElementById('audio').currentTime")
    if later - start < 2.0:
        fail(f"audio is not playing ({where}): currentTime {start} -> {later}")
    print(f"audio plays ({where}): currentTime {start:.1f} -> {later:.1f}", flush=True)


async def main(control_url, lan_url):
    # Headless Chromium plays audio (to no device) only when autoplay needs no gesture.
    async with chromium("--autoplay-policy=no-user-gesture-required") as page:
        # The owner, on this machine.
        await page.call("Page.navigate", url=control_url)
        await page.wait_for("document.body.dataset.controls === 'yes'", "the controls appearing")
        if await page.eval("location.hash") != "":
            fail("the token stayed in the address bar")
        if await page.eval("document.getElementById('controls').hidden"):
            fail("the controls are hidden for the owner")
        print("controls shown; the token left the address bar", flush=True)
        await page.wait_for("document.getElementById('now-title').textContent !== ''", "now playing")
        await plays(page, "main listener")
        await page.wait_for("document.getElementById('cover').complete && document.getElementById('cover').naturalWidth > 0",
                            "the cover loading")
        first = await page.eval("document.body.dataset.nowId")
        title = await page.eval("document.getElementById('now-title').textContent")
        print(f"now playing {title!r} with its cover", flush=True)
        await page.eval("document.getElementById('skip').click(); true")
        await page.wait_for(f"document.body.dataset.nowId !== {json.dumps(first)}", "the skip changing the track", 30)
        print("skip: now playing " + await page.eval("document.getElementById('now-title').textContent"), flush=True)

        await page.eval("document.getElementById('q').value = 'Harbour'; document.getElementById('search').requestSubmit(); true")
        await page.wait_for("document.querySelector('#results button') !== null", "search results")
        await page.eval("document.querySelector('#results button').click(); true")
        await page.wait_for("document.getElementById('said').textContent.startsWith('queued')", "the queueing")
        await page.wait_for("document.getElementById('next').innerText.includes('queued')", "the plan showing the queued song")
        print("search and queue: " + await page.eval("document.getElementById('said').textContent"), flush=True)

        # A listener elsewhere on the LAN.
        await page.call("Page.navigate", url=lan_url)
        await page.wait_for("document.body.dataset.controls === 'no'", "the page deciding on controls")
        if not await page.eval("document.getElementById('controls').hidden"):
            fail("the controls are shown on the LAN")
        await page.wait_for("document.getElementById('now-title').textContent !== ''", "now playing on the LAN")
        await plays(page, "LAN listener")
        for path in ["skip", "pause", "session", "queue"]:
            status = await page.eval(
                f"fetch('/radio/api/{path}', {{method: 'POST', credentials: 'include', "
                "headers: {'content-type': 'application/json'}, body: '{}'}).then(r => r.status, () => 0)")
            if 200 <= status < 300:
                fail(f"/radio/api/{path} answered {status} on the LAN")
        # The main listener's control route, from the LAN page's origin.
        main = control_url.split("/radio/")[0]
        status = await page.eval(
            f"fetch({json.dumps(main + '/radio/api/skip')}, {{method: 'POST', credentials: 'include'}})"
            ".then(r => r.status, () => 0)")
        if 200 <= status < 300:
            fail(f"a LAN page's skip on the main listener answered {status}")
        print("no controls on the LAN; every control call refused", flush=True)


asyncio.run(main(sys.argv[1], sys.argv[2]))
print("OK", flush=True)
