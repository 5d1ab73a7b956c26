"""The upload benchmark's HTTP source: a static file server whose responses go out with
sendfile(2) (aiohttp's FileResponse), so serving the file costs this machine next to no CPU, as a
provider's CDN costs it none. `python -m bench.file_server PORT DIRECTORY`."""

from __future__ import annotations

import sys

from aiohttp import web

if __name__ == "__main__":
    app = web.Application()
    app.router.add_static("/", sys.argv[2])
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
