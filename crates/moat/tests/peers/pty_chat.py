"""Drives `moat chat` as a person at a terminal would: in a pseudo-terminal, typing lines
when the prompt appears, then Ctrl-D. Prints everything the terminal showed.

    pty_chat.py TIMEOUT_SECONDS LINE [LINE...] -- PROGRAM [ARG...]

Exits 3 if a prompt did not come back within the timeout, else with the program's status.
"""

import os
import pty
import select
import sys
import time


def main() -> int:
    args = sys.argv[1:]
    split = args.index("--")
    timeout, lines, argv = float(args[0]), args[1:split], args[split + 1 :]
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(argv[0], argv)
    shown = b""

    def read_until(needle: bytes, start: int) -> bool:
        nonlocal shown
        deadline = time.monotonic() + timeout
        while needle not in shown[start:]:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the program ended (EIO on Linux)
                return False
            if not chunk:
                return False
            shown += chunk
        return True

    ok = read_until(b"> ", 0)
    for line in lines:
        if not ok:
            break
        mark = len(shown)
        os.write(fd, line.encode() + b"\r")
        # The echo of the line, then the answer, then the next prompt.
        ok = read_until(b"\n> ", mark)
    if ok:
        os.write(fd, b"\x04")
        read_until(b"\x00", len(shown))  # read to the end
    sys.stdout.write(shown.decode(errors="replace"))
    sys.stdout.flush()
    if not ok:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        return 3
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
