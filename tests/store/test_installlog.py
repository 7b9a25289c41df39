"""The install log: steps and outputs, as an operator reads them, credentials hidden."""

from __future__ import annotations

from pathlib import Path

from agent.store import installlog, layout


def test_urls_in_steps_and_outputs_have_their_credentials_hidden(tmp_path: Path) -> None:
    store = layout.Store(tmp_path)
    log = installlog.InstallLog(store, store.entry("tool", "1.0.0", "x64"))

    log.step("download", "http://user:p@ss-secret@127.0.0.1:8080/x/tool.tgz 10 bytes")
    log.output("pip", "Looking in indexes: https://t0ken-secret@127.0.0.1:8080/simple/\ndone")
    log.save()

    text = log.path.read_text()
    assert "secret" not in text
    assert "download http://user:***@127.0.0.1:8080/x/tool.tgz 10 bytes" in text
    assert "  Looking in indexes: https://***@127.0.0.1:8080/simple/" in text


def test_a_long_output_is_cut_after_its_urls_are_hidden(tmp_path: Path) -> None:
    store = layout.Store(tmp_path)
    log = installlog.InstallLog(store, store.entry("tool", "1.0.0", "x64"))
    url = "https://user:SECRETPASSWORD@127.0.0.1/x.tgz\n"
    # The 64 KiB cut falls inside the URL: cut first, its scheme would be gone.
    log.output("pip", "Downloading " + url + "." * (64 * 1024 - len(url) + 20))
    log.save()
    assert "SECRETPASS" not in log.path.read_text()
