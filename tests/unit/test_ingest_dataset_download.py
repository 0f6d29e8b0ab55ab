"""Where Spambase comes from: the packaged copy by default, else a download (UCI's zip layout, against a
local HTTP server) cached once per URL."""

from __future__ import annotations

import http.server
import io
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fireman.common.dataset import SPAMBASE_ATTRIBUTION, load_spambase, packaged_spambase
from fireman.common.errors import UserError
from fireman.common.schema import FEATURE_NAMES
from fireman.common.settings import DatasetSettings
from tests.conftest import SHARED_SPAMBASE


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
    assert len(list(tmp_path.glob("spambase-*.csv"))) == 1
    again = load_spambase(settings)
    assert again.equals(frame)
    assert len(requests) == 1  # the second load came from the cache


def test_a_failed_download_is_a_user_error(server: tuple[str, list[str]], tmp_path: Path) -> None:
    base, _ = server
    settings = DatasetSettings(spambase_path=None, spambase_url=f"{base}/missing.zip", cache_dir=tmp_path)
    with pytest.raises(UserError, match="FIREMAN_SPAMBASE_PATH"):
        load_spambase(settings)
    assert not list(tmp_path.glob("spambase*"))


def test_unset_settings_read_the_packaged_copy_without_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIREMAN_SPAMBASE_PATH", raising=False)
    monkeypatch.delenv("FIREMAN_SPAMBASE_URL", raising=False)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the packaged copy needs no download")

    monkeypatch.setattr("fireman.common.dataset.httpx.get", no_network)
    frame = load_spambase(DatasetSettings())
    assert frame.shape == (4601, 58)
    assert frame["label"].sum() == 1813  # UCI's count of spam messages
    if SHARED_SPAMBASE.is_file():
        assert frame.equals(load_spambase(DatasetSettings(spambase_path=SHARED_SPAMBASE)))


def test_the_packaged_copy_ships_its_attribution() -> None:
    assert packaged_spambase().name == "spambase.csv.gz"
    text = SPAMBASE_ATTRIBUTION
    assert "CC BY 4.0" in text and "UCI Machine Learning Repository" in text
