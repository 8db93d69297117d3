"""A Subsonic server for the radio tests: Supysonic (PyPI supysonic, in the venv whose
python is MOAT_SUPYSONIC_PYTHON) served by waitress on 127.0.0.1:PORT and nowhere else.

In WORKDIR it writes supysonic.conf (a SQLite database and the caches in WORKDIR), creates
the user (or sets their password, on a restart), adds MUSIC as the music folder and scans
it to the end, then serves the Subsonic API under /rest and prints "ready" once it
accepts connections. The password is read from SUPYSONIC_PASSWORD, or else --password.

What supysonic-cli and supysonic-server do, but in one process that reads no config file
but its own (theirs read /etc/supysonic, ~/.supysonic, ~/.config/supysonic and
./supysonic.conf) and listens on loopback only (supysonic-server's default is 0.0.0.0).
Nothing reaches the network: no Last.fm key, no ListenBrainz URL, no online lyrics, no
daemon or watcher.

Supysonic speaks Subsonic API 1.12: p= (plain or enc:HEX) or HTTP Basic, no token auth.

Usage: supysonic_server.py --dir WORKDIR --music DIR --port PORT --user U [--password P]
"""
import argparse
import os
import signal
import sys

from supysonic.config import IniConfig
from supysonic.db import Folder, User, init_database, release_database
from supysonic.managers.folder import FolderManager
from supysonic.managers.user import UserManager
from supysonic.scanner import Scanner
from supysonic.web import create_application
from waitress import create_server

HOST = "127.0.0.1"
FOLDER = "music"

parser = argparse.ArgumentParser()
parser.add_argument("--dir", required=True)
parser.add_argument("--music", required=True)
parser.add_argument("--port", required=True, type=int)
parser.add_argument("--user", required=True)
parser.add_argument("--password")
args = parser.parse_args()
password = os.environ.get("SUPYSONIC_PASSWORD") or args.password
if not password:
    sys.exit("supysonic_server: no password (SUPYSONIC_PASSWORD or --password)")

workdir = os.path.abspath(args.dir)
music = os.path.abspath(args.music)
os.makedirs(workdir, exist_ok=True)
conf = os.path.join(workdir, "supysonic.conf")
with open(conf, "w") as f:
    f.write(
        f"""[base]
database_uri = sqlite:///{os.path.join(workdir, "supysonic.db")}
follow_symlinks = no

[webapp]
cache_dir = {os.path.join(workdir, "cache")}
log_level = WARNING
mount_webui = no
mount_api = yes
online_lyrics = no

[daemon]
socket = {os.path.join(workdir, "daemon.sock")}
run_watcher = no
"""
    )
config = IniConfig([conf])
# The defaults that would talk to the outside: ListenBrainz's is its public API (used
# only for a user with a token, which only the web UI, not mounted, can set).
config.LISTENBRAINZ["api_url"] = None
config.LASTFM.update(api_key=None, secret=None)

init_database(config.BASE["database_uri"])
try:
    if User.select().where(User.name == args.user).exists():
        UserManager.change_password2(args.user, password)
    else:
        UserManager.add(args.user, password)
    if not Folder.select().where(Folder.root, Folder.name == FOLDER).exists():
        FolderManager.add(FOLDER, music)
    scanner = Scanner(follow_symlinks=False)
    scanner.queue_folder(FOLDER)
    scanner.run()  # in this thread: returns when the scan is over
    stats = scanner.stats()
    print(
        f"supysonic_server: scanned {stats.scanned} files: {stats.added.artists} artists, "
        f"{stats.added.albums} albums, {stats.added.tracks} tracks added",
        file=sys.stderr,
    )
    for err in stats.errors:
        print(f"supysonic_server: cannot read {err}", file=sys.stderr)
finally:
    release_database()

app = create_application(config)
# Binds and listens here: connections wait in the backlog until run() takes them.
server = create_server(app, host=HOST, port=args.port, ipv6=False)
# Nothing to flush (each request commits its own): stop at once.
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
signal.signal(signal.SIGINT, lambda *_: os._exit(0))
print("ready", flush=True)
server.run()
