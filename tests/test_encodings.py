"""Tokenizer data loads with networking disabled, byte-exact with OpenAI's published files."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from gpt_batch_api.encodings import _packaged_bpe_bytes, encoding_for_model, get_encoding

REPO = Path(__file__).resolve().parents[1]
PUBLISHED_SHA256 = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}


def test_packaged_files_match_openais_published_hashes():
    for name, digest in PUBLISHED_SHA256.items():
        assert hashlib.sha256(_packaged_bpe_bytes(name)).hexdigest() == digest


def test_encodings_load_with_the_network_blocked_and_touch_no_cache(tmp_path):
    cache = tmp_path / "tiktoken_cache"
    cache.mkdir()
    code = textwrap.dedent(
        """
        import socket
        def refuse(*args, **kwargs):
            raise OSError("network disabled by the test")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from gpt_batch_api.encodings import get_encoding
        print(get_encoding("o200k_base").encode("hello world"), get_encoding("cl100k_base").encode("hello world"))
        """
    )
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[24912,", "2375]", "[15339,", "1917]"]
    assert list(cache.iterdir()) == [], "nothing may be written into the user's tiktoken cache"


def test_model_names_map_to_encodings_with_a_fallback():
    assert encoding_for_model("gpt-4o-mini")[0].name == "o200k_base"
    assert encoding_for_model("gpt-4")[0].name == "cl100k_base"
    encoding, known = encoding_for_model("some-local-llama")
    assert (encoding.name, known) == ("o200k_base", False)
    text = "Ünïcödé, emoji 🚀 and code: def f(x): return x**2"
    assert get_encoding("o200k_base").decode(get_encoding("o200k_base").encode(text)) == text
