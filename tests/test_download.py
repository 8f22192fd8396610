"""``python -m dextr_core.download`` against a local HTTP server on 127.0.0.1 (no real network)."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from dextr_core.download import WEIGHT_FILES, main
from dextr_core.weights import expected_layer_names

REPO = Path(__file__).resolve().parents[1]


def write_small_weights_file(path: Path, layer_names) -> bytes:
    """An HDF5 file in the published layout with tiny datasets (the downloader checks names)."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in layer_names], dtype="S")
        for name in layer_names:
            group = f.create_group(name)
            group.attrs["weight_names"] = np.array([f"{name}/kernel:0".encode()], dtype="S")
            group.create_dataset(f"{name}/kernel:0", data=np.zeros(2, np.float32))
    return path.read_bytes()


class Server:
    """Serves ``files`` {url path: bytes}; ``cut`` {url path: n} sends a full Content-Length but
    closes the connection after n bytes."""

    def __init__(self, files: dict[str, bytes], cut: dict[str, int] | None = None):
        files, cut = dict(files), dict(cut or {})
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                body = files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: cut.get(self.path, len(body))])
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/share/DEXTR/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def good_file(tmp_path_factory) -> bytes:
    return write_small_weights_file(
        tmp_path_factory.mktemp("served") / "w.h5", ["input_1", *expected_layer_names()]
    )


def test_success_file_appears_under_its_name(tmp_path, good_file, capsys):
    dest = tmp_path / "models"
    with Server({"/share/DEXTR/dextr_pascal-sbd.h5": good_file}) as server:
        code = main(["--dest", str(dest), "--url-base", server.url])
    assert code == 0
    assert server.requests == ["/share/DEXTR/dextr_pascal-sbd.h5"]
    assert (dest / "dextr_pascal-sbd.h5").read_bytes() == good_file
    assert sorted(p.name for p in dest.iterdir()) == ["dextr_pascal-sbd.h5"]  # no .part left
    assert "Saved" in capsys.readouterr().out


@pytest.mark.parametrize("model", ["pascal", "coco"])
def test_other_models_use_their_file_names(tmp_path, good_file, model):
    path = "/share/DEXTR/" + WEIGHT_FILES[model]
    with Server({path: good_file}) as server:
        assert main([model, "--dest", str(tmp_path), "--url-base", server.url]) == 0
    assert (tmp_path / WEIGHT_FILES[model]).is_file()


def test_existing_valid_file_is_kept(tmp_path, good_file, capsys):
    (tmp_path / "dextr_pascal-sbd.h5").write_bytes(good_file)
    with Server({}) as server:
        assert main(["--dest", str(tmp_path), "--url-base", server.url]) == 0
    assert server.requests == []
    assert "already there" in capsys.readouterr().out


def test_server_closes_mid_download(tmp_path, good_file, capsys):
    path = "/share/DEXTR/dextr_pascal-sbd.h5"
    with Server({path: good_file}, cut={path: len(good_file) // 2}) as server:
        code = main(["--dest", str(tmp_path), "--url-base", server.url])
    assert code == 1
    assert list(tmp_path.iterdir()) == []  # neither the real name nor the .part
    err = capsys.readouterr().err
    assert "Could not download" in err and "dextr_pascal-sbd.h5" in err
    assert "models/README.md" in err


def test_interrupted_download_keeps_the_file_already_there(tmp_path, good_file):
    """An old (invalid) file is replaced only by a complete, valid download."""
    old = tmp_path / "dextr_pascal-sbd.h5"
    old.write_bytes(b"old partial content")
    path = "/share/DEXTR/dextr_pascal-sbd.h5"
    with Server({path: good_file}, cut={path: 1000}) as server:
        assert main(["--dest", str(tmp_path), "--url-base", server.url]) == 1
    assert old.read_bytes() == b"old partial content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dextr_pascal-sbd.h5"]


def test_http_error(tmp_path, capsys):
    with Server({}) as server:
        assert main(["coco", "--dest", str(tmp_path), "--url-base", server.url]) == 1
    err = capsys.readouterr().err
    assert "HTTP 404" in err and "dextr_coco.h5" in err
    assert list(tmp_path.iterdir()) == []


def test_not_a_dextr_file(tmp_path, tmp_path_factory, capsys):
    wrong = write_small_weights_file(tmp_path_factory.mktemp("wrong") / "x.h5", ["dense_1"])
    with Server({"/share/DEXTR/dextr_pascal-sbd.h5": wrong}) as server:
        assert main(["--dest", str(tmp_path), "--url-base", server.url]) == 1
    assert "not a DEXTR weights file" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_html_page_instead_of_weights(tmp_path, capsys):
    page = b"<html><body>Please log in</body></html>"
    with Server({"/share/DEXTR/dextr_pascal-sbd.h5": page}) as server:
        assert main(["--dest", str(tmp_path), "--url-base", server.url]) == 1
    assert "does not open as HDF5" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_connection_refused_as_a_command(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dextr_core.download",
            "pascal-sbd",
            "--dest",
            str(tmp_path),
            "--url-base",
            f"http://127.0.0.1:{port}/",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Could not download" in result.stderr and "refused" in result.stderr.lower()
    assert "put it in" in result.stderr and "models/README.md" in result.stderr
    assert list(tmp_path.iterdir()) == []


# --- one weights location rule ----------------------------------------------------------------


def test_default_weights_path_is_models_next_to_the_config(tmp_path):
    from dextr_core.config import load_config
    from dextr_core.download import default_weights_path

    (tmp_path / "images").mkdir()
    cfg_file = tmp_path / "anno_cfg.yml"
    cfg_file.write_text("required:\n  source: images\n  destination: masks\n")
    assert default_weights_path(tmp_path) == tmp_path / "models" / "dextr_pascal-sbd.h5"
    assert load_config(cfg_file).weights == default_weights_path(tmp_path)
    assert default_weights_path() == REPO / "models" / "dextr_pascal-sbd.h5"


def test_download_with_a_config_outside_the_repository_saves_where_that_server_looks(
        tmp_path, good_file, monkeypatch):
    from dextr_core.config import load_config

    project = tmp_path / "project"
    (project / "images").mkdir(parents=True)
    cfg_file = project / "anno_cfg.yml"
    cfg_file.write_text("required:\n  source: images\n  destination: masks\n")
    monkeypatch.chdir(tmp_path)
    with Server({"/share/DEXTR/dextr_pascal-sbd.h5": good_file}) as server:
        assert main(["--config", str(cfg_file), "--url-base", server.url]) == 0
    assert load_config(cfg_file).weights.read_bytes() == good_file
    assert not (REPO / "models" / "dextr_pascal-sbd.h5.part").exists()


def test_without_options_the_default_config_names_the_file(tmp_path, good_file, monkeypatch):
    project = tmp_path / "p"
    (project / "images").mkdir(parents=True)
    (project / "anno_cfg.yml").write_text(
        "required:\n  source: images\n  destination: masks\noptional:\n  weights: w/coco.h5\n")
    monkeypatch.setenv("ANNO_CFG", str(project / "anno_cfg.yml"))
    with Server({"/share/DEXTR/dextr_pascal-sbd.h5": good_file}) as server:
        assert main(["--url-base", server.url]) == 0
    assert (project / "w" / "coco.h5").read_bytes() == good_file


def test_install_command_is_the_exact_command_that_puts_the_file_there(tmp_path, good_file):
    import shlex

    from dextr_core.download import install_command

    target = tmp_path / "odd folder" / "models" / "dextr_coco.h5"
    command = install_command(target)
    assert "-m dextr_core.download coco --out" in command
    argv = shlex.split(command)
    assert argv[-1] == str(target)
    with Server({"/share/DEXTR/dextr_coco.h5": good_file}) as server:
        python = sys.executable if argv[0] == "python" else argv[0]
        result = subprocess.run([python, *argv[1:], "--url-base", server.url], cwd=tmp_path,
                                capture_output=True, text=True, timeout=120,
                                env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == good_file



# --- SAM checkpoints (issue 21) -----------------------------------------------------------------


def _sam_layout(width: int | None) -> bytes:
    """A tiny PyTorch state dict with SAM's parts: a ViT image encoder of ``width`` (None:
    MobileSAM's TinyViT key) — what the downloader checks besides the MD5."""
    torch = pytest.importorskip("torch")
    import io

    state = {"prompt_encoder.point_embeddings.0.weight": torch.zeros(1, 256),
             "mask_decoder.iou_token.weight": torch.zeros(1, 256)}
    if width is None:
        state["image_encoder.layers.0.blocks.0.conv1.c.weight"] = torch.zeros(256, 64, 1, 1)
    else:
        state["image_encoder.patch_embed.proj.weight"] = torch.zeros(width, 3, 16, 16)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def test_sam_vit_b_is_fetched_and_checked_by_md5_and_layout(tmp_path, monkeypatch, capsys):
    import hashlib

    from dextr_core import download

    body = _sam_layout(768)
    published = download.SAM_FILES["sam-vit-b"]
    assert published.md5 == "01ec64d29a2fca3f0661936605ae66f8"
    # the served stand-in is not the real file: make its MD5 the published one for this test
    monkeypatch.setitem(download.SAM_FILES, "sam-vit-b", download.SamFile(
        published.name, published.url_base, hashlib.md5(body).hexdigest(), "vit_b"))
    path = "/share/DEXTR/sam_vit_b_01ec64.pth"
    with Server({path: body}) as server:
        assert main(["sam-vit-b", "--dest", str(tmp_path), "--url-base", server.url]) == 0
    assert (tmp_path / "sam_vit_b_01ec64.pth").read_bytes() == body
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sam_vit_b_01ec64.pth"]
    with Server({}) as server:  # a valid file already there is kept
        assert main(["sam-vit-b", "--dest", str(tmp_path), "--url-base", server.url]) == 0
    assert server.requests == [] and "already there" in capsys.readouterr().out


def test_a_sam_file_with_another_md5_is_refused_and_not_saved(tmp_path, capsys):
    body = _sam_layout(768)
    with Server({"/share/DEXTR/sam_vit_b_01ec64.pth": body}) as server:
        assert main(["sam-vit-b", "--dest", str(tmp_path), "--url-base", server.url]) == 1
    err = capsys.readouterr().err
    assert "not the published 01ec64d29a2fca3f0661936605ae66f8" in err
    assert list(tmp_path.iterdir()) == []


def test_mobile_sam_is_checked_by_layout_and_a_wrong_variant_refused(tmp_path, capsys):
    out = tmp_path / "models" / "mobile_sam.pt"
    with Server({"/share/DEXTR/mobile_sam.pt": _sam_layout(None)}) as server:
        assert main(["mobile-sam", "--out", str(out), "--url-base", server.url]) == 0
    assert out.is_file() and "MD5 of mobile_sam.pt" in capsys.readouterr().out
    out.unlink()
    with Server({"/share/DEXTR/mobile_sam.pt": _sam_layout(1280)}) as server:
        assert main(["mobile-sam", "--out", str(out), "--url-base", server.url]) == 1
    assert "is a vit_h checkpoint, not mobile_sam.pt" in capsys.readouterr().err
    assert not out.exists()


def test_sam_downloads_are_published_where_the_checkpoints_live():
    from dextr_core.download import SAM_FILES, model_for

    assert SAM_FILES["sam-vit-b"].url_base == "https://dl.fbaipublicfiles.com/segment_anything/"
    assert SAM_FILES["mobile-sam"].url_base.startswith("https://github.com/ChaoningZhang/MobileSAM")
    assert model_for("models/mobile_sam.pt") == "mobile-sam"
