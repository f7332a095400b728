"""``pelletseg serve`` says where the dashboard and the API docs are and how to get a key."""

from __future__ import annotations

from click.testing import CliRunner

from cli.main import main
from cli.serve import banner
from core.settings import Settings


def test_banner_names_dashboard_docs_and_the_key_command(tmp_path):
    lines = banner(Settings(home=tmp_path, api_host="127.0.0.1", api_port=8123), tmp_path)
    text = "\n".join(lines)
    assert "dashboard  http://127.0.0.1:8123/" in text
    assert "API docs   http://127.0.0.1:8123/docs" in text
    assert f"pelletseg apikey create NAME --home {tmp_path}" in text
    usage = CliRunner().invoke(main, ["apikey", "create", "--help"])  # the command it names
    assert usage.exit_code == 0 and "create [OPTIONS] NAME" in usage.output
    assert "--home" in usage.output


def test_banner_on_every_interface_and_without_auth(tmp_path):
    text = "\n".join(banner(Settings(home=tmp_path, api_host="0.0.0.0", api_port=80)))
    assert "http://127.0.0.1:80/docs" in text and "0.0.0.0" not in text
    text = "\n".join(banner(Settings(home=tmp_path, api_auth=False)))
    assert "none needed" in text and "apikey create" not in text


def test_serve_prints_the_banner_before_it_starts(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: started.append(kw))
    res = CliRunner().invoke(main, ["serve", "--port", "8124", "--home", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert started == [{"host": "127.0.0.1", "port": 8124, "log_level": "info"}]
    assert "dashboard  http://127.0.0.1:8124/" in res.output
    assert f"pelletseg apikey create NAME --home {tmp_path}" in res.output
