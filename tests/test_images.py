"""Reading images: EXIF orientation, grayscale, RGBA, 16-bit, corrupt files."""

import numpy as np
import pytest
from PIL import Image

from dextr_core.images import ImageReadError, image_size, is_image_file, load_image, to_rgb_uint8


def _save_with_orientation(path, array, orientation):
    img = Image.fromarray(array)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, exif=exif.tobytes())


def test_exif_rotation_is_applied(tmp_path):
    # 20 wide x 10 tall, a red marker in the top-left corner as stored.
    stored = np.zeros((10, 20, 3), np.uint8)
    stored[:2, :2] = (255, 0, 0)
    path = tmp_path / "rotated.png"
    _save_with_orientation(path, stored, 6)  # 6: a viewer rotates 90 degrees clockwise

    upright = load_image(path)
    assert upright.shape == (20, 10, 3)
    assert image_size(path) == (10, 20)
    # Rotating clockwise moves the stored top-left corner to the top-right.
    assert tuple(upright[0, -1]) == (255, 0, 0)
    assert tuple(upright[0, 0]) == (0, 0, 0)


def test_grayscale_file_becomes_rgb(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    path = tmp_path / "gray.png"
    Image.fromarray(gray, mode="L").save(path)
    rgb = load_image(path)
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[:, :, 0], gray) and np.array_equal(rgb[:, :, 2], gray)


def test_16bit_file_is_scaled_to_8bit(tmp_path):
    deep = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    rgb = load_image(path)
    assert rgb[0, :, 0].tolist() == [0, 100, 255]


def test_rgba_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    rgb = load_image(path)
    assert tuple(rgb[0, 0]) == (10, 20, 30)
    assert tuple(rgb[1, 1]) == (255, 255, 255)


def test_corrupt_and_missing_files_name_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        load_image(bad)
    with pytest.raises(ImageReadError, match="broken.jpg"):
        image_size(bad)
    with pytest.raises(ImageReadError, match="missing.png"):
        load_image(tmp_path / "missing.png")


def test_truncated_jpeg_is_reported(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        load_image(path)


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.array([[0, 255]], np.uint8), [0, 255]),
        (np.array([[0.0, 1.0]], np.float32), [0, 255]),
        (np.array([[0.0, 128.0]], np.float64), [0, 128]),
        (np.array([[False, True]]), [0, 255]),
        (np.array([[0, 65535]], np.uint16), [0, 255]),
        (np.array([[3, 200]], np.int64), [3, 200]),
    ],
)
def test_to_rgb_uint8_dtypes(array, expected):
    out = to_rgb_uint8(array)
    assert out.shape == (1, 2, 3) and out.dtype == np.uint8
    assert out[0, :, 1].tolist() == expected


def test_to_rgb_uint8_rejects_other_shapes():
    with pytest.raises(ValueError, match="shape"):
        to_rgb_uint8(np.zeros((2, 2, 2), np.uint8))


def test_image_extensions_any_case():
    assert is_image_file("a/B.JPG") and is_image_file("x.WebP") and is_image_file("t.tif")
    assert not is_image_file("notes.txt") and not is_image_file("mask.npy")


# --- the pixel budget: checked from the header, before decoding -------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def write_bilevel_png(path, width: int, height: int) -> None:
    """A valid 1-bit grayscale PNG, all black, written row by row (a 40000 x 40000 one is about
    200 KB on disk and 1.6 G pixels decoded)."""
    import struct
    import zlib

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte 0 + packed bits
    packer = zlib.compressobj(9)
    parts = [packer.compress(row) for _ in range(height)]
    parts.append(packer.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    with open(path, "wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                  + _png_chunk(b"IDAT", b"".join(parts)) + _png_chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("bomb") / "huge.png"
    write_bilevel_png(path, 40000, 40000)
    return path


def test_a_40000_px_square_png_is_refused_with_its_size_by_image_size(huge_png):
    assert huge_png.stat().st_size < 1_000_000
    with pytest.raises(ImageReadError) as info:
        image_size(huge_png)
    message = str(info.value)
    assert "40000 x 40000 px = 1600 MP" in message and "200 MP limit" in message
    assert "huge.png" in message and "max_image_megapixels" in message


def test_a_40000_px_square_png_is_refused_by_load_image_without_decoding(huge_png, monkeypatch):
    from PIL import ImageFile

    def no_decoding(self):
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageReadError, match="1600 MP, over the 200 MP limit"):
        load_image(huge_png)


def test_the_pixel_budget_can_be_set_per_call_and_per_process(tmp_path):
    from dextr_core import images

    path = tmp_path / "small.png"
    write_bilevel_png(path, 300, 200)
    assert image_size(path) == (300, 200)
    with pytest.raises(ImageReadError, match=r"300 x 200 px = 0.06 MP, over the 0.05 MP limit"):
        image_size(path, max_pixels=50_000)
    assert load_image(path, max_pixels=60_000).shape == (200, 300, 3)
    try:
        images.set_max_pixels(59_999)
        with pytest.raises(ImageReadError, match="over the"):
            load_image(path)
    finally:
        images.set_max_pixels(None)
    assert images.max_pixels() == images.DEFAULT_MAX_PIXELS == 200_000_000
    assert load_image(path).shape == (200, 300, 3)


def test_pillows_decompression_bomb_error_never_escapes(tmp_path, monkeypatch):
    from PIL import Image

    path = tmp_path / "bomb.png"
    write_bilevel_png(path, 100, 100)

    def bomb(*args, **kwargs):
        raise Image.DecompressionBombError("Image size (10000 pixels) exceeds limit")

    monkeypatch.setattr(Image, "open", bomb)
    for reader in (image_size, load_image):
        with pytest.raises(ImageReadError, match="bomb.png"):
            reader(path)


def test_a_folder_scan_marks_the_huge_png_unreadable_and_adds_the_other_photos(huge_png, tmp_path):
    import shutil

    from dextr_core.store import ProgressStore

    source = tmp_path / "photos"
    source.mkdir()
    shutil.copy(huge_png, source / "scan.png")
    write_bilevel_png(source / "fine.png", 64, 48)
    store = ProgressStore(tmp_path / "progress.json", source)
    try:
        report = store.sync()
        assert sorted(report.added) == ["fine.png", "scan.png"]
        assert report.unreadable == ["scan.png"]
        assert store.get("fine.png").width == 64
    finally:
        store.close()
