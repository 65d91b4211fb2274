"""The SWLM of the crash tests: an ``swlm_sdk`` App that installs by copying the image.

It checks each image against the SHA-256 that Core serves (given in a JSON file), so a
corrupted or wrongly resumed download shows as ``VALIDATION_FAILED``; a good one is copied to
``installed/<update_id>`` (write, fsync, rename) and reported OK.

Run: ``python crash_swlm.py CONFIG STATE_DIR INSTALLED_DIR EXPECTED_JSON``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path

from swlm_sdk import DownloadComplete, ResultCode
from swlm_sdk.app import App


def main(argv: list[str]) -> None:
    config, state_dir, installed_dir, expected_file = argv[1:5]
    logging.basicConfig(
        level=logging.DEBUG, format="%(asctime)s swlm %(levelname)s %(name)s: %(message)s"
    )
    expected: dict[str, str] = json.loads(Path(expected_file).read_text())
    installed = Path(installed_dir)
    installed.mkdir(exist_ok=True)
    app = App(state_dir=state_dir, config=config)

    @app.on_download_complete
    def install(event: DownloadComplete) -> tuple[ResultCode, str]:
        data = Path(event.update_image).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected.get(event.update_id):
            return ResultCode.VALIDATION_FAILED, f"sha256 {digest} ({len(data)} bytes)"
        target = installed / event.update_id
        tmp = target.with_suffix(".tmp")
        with tmp.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        tmp.replace(target)
        return ResultCode.OK, "installed"

    app.run()


if __name__ == "__main__":
    main(sys.argv)
