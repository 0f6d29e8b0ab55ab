"""Spambase's "download from UCI once" path, against a local HTTP server with UCI's zip layout."""

from __future__ import annotations

import http.server
import io
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fireman_common.dataset import load_spambase
from fireman_common.errors import UserError
from fireman_common.schema import FEATURE_NAMES
from fireman_common.settings import DatasetSettings


def uci_zip(rows: int = 30) -> bytes:
    rng = np.random.default_rng(0)
    lines = []
    for i in range(rows):
        values = [f"{v:.3f}" for v in rng.random(len(FEATURE_NAMES))] + [str(i % 2)]
        lines.append(",".join(values))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("spambase.names", "| names file")
        archive.writestr("spambase.DOCUMENTATION", "docs")
        archive.writestr("spambase.data", "\n".join(lines) + "\n")  # no header, like UCI's
    return buffer.getvalue()


@pytest.fixture
def server() -> Iterator[tuple[str, list[str]]]:
    payload = uci_zip()
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            if self.path != "/static/public/94/spambase.zip":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()


def test_downloads_once_then_reads_the_cache(server: tuple[str, list[str]], tmp_path: Path) -> None:
    base, requests = server
    settings = DatasetSettings(
        spambase_path=None, spambase_url=f"{base}/static/public/94/spambase.zip", cache_dir=tmp_path
    )
    frame = load_spambase(settings)
    assert list(frame.columns) == [*FEATURE_NAMES, "label"] and len(frame) == 30
    assert frame["label"].tolist()[:4] == [0, 1, 0, 1]
    assert (tmp_path / "spambase.csv").is_file()
    again = load_spambase(settings)
    assert again.equals(frame)
    assert len(requests) == 1  # the second load came from the cache


def test_a_failed_download_is_a_user_error(server: tuple[str, list[str]], tmp_path: Path) -> None:
    base, _ = server
    settings = DatasetSettings(spambase_path=None, spambase_url=f"{base}/missing.zip", cache_dir=tmp_path)
    with pytest.raises(UserError, match="FIREMAN_SPAMBASE_PATH"):
        load_spambase(settings)
    assert not (tmp_path / "spambase.csv").exists()
