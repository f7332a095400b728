"""The dashboard's static pages (no browser): served without a key, with a strict CSP,
every script/style/image they reference exists, the vendored viewer carries its licence,
and no page script writes HTML from data."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from api.routes.dashboard import STATIC_DIR

PAGES = ["/", "/jobs/5b0f7a0e-8d7c-4a53-9d1c-2f4f8a1e6b42"]


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value and value.startswith("/static/"):
                self.refs.append(value)


@pytest.mark.parametrize("path", PAGES)
def test_pages_are_served_without_a_key_with_security_headers(api, path):
    r = api.client.get(path, headers={"Authorization": ""})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in r.text  # inline scripts would be blocked by the CSP anyway


@pytest.mark.parametrize("path", PAGES)
def test_everything_a_page_references_is_served(api, path):
    parser = _Refs()
    parser.feed(api.client.get(path).text)
    assert len(parser.refs) >= 3
    for ref in parser.refs:
        r = api.client.get(ref, headers={"Authorization": ""})
        assert r.status_code == 200, ref
        assert r.headers["content-security-policy"]


def test_module_imports_resolve_to_served_files_and_exported_names(api):
    for js in sorted((STATIC_DIR / "js").glob("*.js")):
        imports = re.findall(r'import \{([^}]*)\} from "\./([\w.-]+\.js)"', js.read_text())
        assert imports or js.name == "api.js", js.name
        for names, target in imports:
            r = api.client.get(f"/static/js/{target}")
            assert r.status_code == 200, f"{js.name} imports {target}"
            assert "javascript" in r.headers["content-type"]
            exported = set(re.findall(r"^export (?:async )?(?:function|const|class) (\w+)",
                                      r.text, re.M))
            for name in (n.strip() for n in names.split(",") if n.strip()):
                assert name in exported, f"{js.name} imports {name} that {target} lacks"


def test_static_files_cannot_escape_the_folder(api):
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2Fapp.py"):
        r = api.client.get(path)
        assert r.status_code == 404 and b"create_app" not in r.content


def test_the_vendored_viewer_ships_with_its_licence_and_record():
    osd = STATIC_DIR / "vendor" / "openseadragon"
    assert (osd / "openseadragon.min.js").read_text()[:200].startswith("//! openseadragon 6.1.1")
    assert "Redistribution and use in source and binary forms" in (osd / "LICENSE.txt").read_text()
    assert len(list((osd / "images").glob("*.png"))) >= 20  # the navigation buttons
    record = (STATIC_DIR / "vendor" / "README.md").read_text()
    assert "OpenSeadragon | 6.1.1 | BSD-3-Clause" in record


def test_page_scripts_never_write_html_from_data():
    for js in sorted((STATIC_DIR / "js").glob("*.js")):
        text = js.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, f"{js.name} uses {sink}"
        assert 'setAttribute("style"' not in text  # blocked by the CSP: use el.style


def test_the_api_key_never_goes_into_a_url():
    text = (STATIC_DIR / "js" / "api.js").read_text()
    assert "Authorization: `Bearer ${key}`" in text
    for js in sorted((STATIC_DIR / "js").glob("*.js")):
        assert not re.search(r"[?&](api_?key|key|token)=", js.read_text()), js.name


def test_the_submit_panel_takes_the_same_image_names_as_pelletseg_submit():
    from cli.sniff import IMAGE_SUFFIXES, MICROSCOPE_SUFFIXES

    js = (STATIC_DIR / "js" / "submit.js").read_text()
    for name, suffixes in (("IMAGE_SUFFIXES", IMAGE_SUFFIXES),
                           ("MICROSCOPE_SUFFIXES", MICROSCOPE_SUFFIXES)):
        listed = re.search(rf"{name} = \[(.*?)\];", js, re.S).group(1)
        assert tuple(re.findall(r'"(\.[a-z0-9]+)"', listed)) == suffixes, name


def test_uploads_may_connect_to_the_s3_endpoint_of_presigned_part_urls(s3_bucket, tmp_path):
    from api.routes.dashboard import security_headers, upload_origins
    from storage.blobs import BlobStore

    assert upload_origins(BlobStore(tmp_path.as_uri())) == []  # parts go to this API
    origins = upload_origins(BlobStore(f"s3://{s3_bucket}/p"))
    assert len(origins) == 1 and re.fullmatch(r"https?://[^/]+", origins[0]), origins
    policy = security_headers(origins)["Content-Security-Policy"]
    assert f"connect-src 'self' {origins[0]};" in policy
    assert "connect-src 'self';" in security_headers()["Content-Security-Policy"]
