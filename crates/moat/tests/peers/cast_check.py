"""Casts from moat's radio player page in a real headless Chromium.

usage: cast_check.py CONTROL_URL SPEAKER
  CONTROL_URL  the address `moat radio open` prints (main listener, token in the fragment)
  SPEAKER      the speaker's friendly name

The owner opens the page, opens "Play on a speaker", finds speakers, sees SPEAKER, starts
it playing the radio and sees it say so, then stops it. Prints one line per step; exits 1
with the reason on the first failure.
"""

import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chromium_page import chromium, fail  # noqa: E402

ROW = "[...document.querySelectorAll('#speakers li')].find(li => li.textContent.startsWith({name}))"


async def main(control_url, speaker):
    row = ROW.format(name=json.dumps(speaker))
    async with chromium() as page:
        await page.call("Page.navigate", url=control_url)
        await page.wait_for("document.body.dataset.controls === 'yes'", "the controls appearing")
        await page.eval("document.getElementById('cast').open = true; document.getElementById('cast-find').click(); true")
        await page.wait_for(f"{row} !== undefined", "the speaker in the list", timeout=20)
        print("found: " + await page.eval(f"{row}.textContent"), flush=True)
        await page.eval(f"{row}.querySelector('button').click(); true")
        await page.wait_for(f"{row} !== undefined && {row}.textContent.includes('playing the radio')",
                            "the speaker playing the radio", timeout=20)
        print("playing: " + await page.eval(f"{row}.textContent"), flush=True)
        await page.eval(f"{row}.querySelector('button').click(); true")
        await page.wait_for(f"{row} !== undefined && !{row}.textContent.includes('playing the radio')",
                            "the speaker stopping", timeout=20)
        print("stopped: " + await page.eval(f"{row}.textContent"), flush=True)


asyncio.run(main(sys.argv[1], sys.argv[2]))
print("OK", flush=True)
