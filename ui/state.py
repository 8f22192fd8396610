"""The names the pages have always imported from ``ui.state``, now kept in two modules.

:mod:`ui.resources` (config, engine, progress store, annotator name, the app.py check) and
:mod:`ui.photos` (decoded photos, display copies, JPEG encoding). Import from those in new code;
this module re-exports them so existing imports keep working.
"""

from ui.photos import (  # noqa: F401
    DISPLAY_MAX,
    FULL_IMAGE_CACHE_MB,
    MAX_UPSCALE,
    DisplayImage,
    _ImageLRU,
    display_image,
    display_size_for,
    encode_jpeg,
    full_image,
)
from ui.resources import (  # noqa: F401
    ANNOTATOR_KEY,
    APP_DIR,
    CONFIG_ENV,
    Engine,
    StoreHandle,
    annotator,
    app_has_run,
    config,
    config_path,
    confirm_reset,
    decline_reset,
    engine,
    reset_pending,
    run_through_app,
    segmenter,
    set_annotator,
    store,
    store_handle,
)
